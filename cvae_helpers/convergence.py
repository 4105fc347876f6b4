"""How the three estimators move with the number of samples S, and how far S = 100 is
from converged: the curves of the estimators chapter and the reference run's
``convergence_*.json``."""

from __future__ import annotations

from collections.abc import Sequence

from .config import RunSpec, describe_device, set_seed
from .evaluation import ESTIMATORS, Estimate, estimates_against_samples
from .pipeline import TrainedModels, get_trained_models

# The importance-sampling estimate on the whole test set at these S (the tables: 100).
FULL_TEST_SIZES = (100, 1000, 5000)


def _summary(values) -> dict[str, list[float]]:
    estimates = [Estimate.of(row) for row in values]
    return {
        "mean": [e.mean for e in estimates],
        "stderr": [e.stderr for e in estimates],
    }


def convergence_curve(
    models: TrainedModels,
    sample_sizes: Sequence[int] | None = None,
    num_images: int | None = None,
) -> dict:
    """MC, IS and −ELBO against S on the first ``num_images`` test images (default: the
    budget's ``curve_sample_sizes`` and ``curve_images``), as a JSON-ready record: per
    estimator and S, the mean and standard error over images, and those of its paired
    difference from IS at the largest S, which show the convergence without the spread
    between images."""
    spec, evaluation = models.spec, models.spec.profile.evaluation
    sizes = list(sample_sizes or evaluation.curve_sample_sizes)
    split = models.splits.test.take(slice(0, num_images or evaluation.curve_images))
    set_seed(spec.seed)
    values = estimates_against_samples(models.cvae, split, sizes, ESTIMATORS)
    best = values["is"][-1]
    record = {
        "num_quadrant_inputs": spec.num_quadrant_inputs,
        "decoder_sees_input": spec.decoder_sees_input,
        "profile": spec.profile.name, "seed": spec.seed, "num_images": len(split),
        "sample_sizes": sizes, "estimators": {},
    }  # fmt: skip
    for name, rows in values.items():
        difference = _summary(rows - best)
        record["estimators"][name] = {
            **_summary(rows),
            "minus_best_is_mean": difference["mean"],
            "minus_best_is_stderr": difference["stderr"],
        }
    return record


def full_test_is(
    models: TrainedModels, sample_sizes: Sequence[int] = FULL_TEST_SIZES
) -> dict:
    """The IS estimate on the whole test split at each S (prefixes of one set of
    draws)."""
    set_seed(models.spec.seed)
    values = estimates_against_samples(
        models.cvae, models.splits.test, list(sample_sizes), ("is",)
    )["is"]
    return {
        "sample_sizes": list(sample_sizes),
        "num_images": len(models.splits.test),
        **_summary(values),
    }


def convergence_study(
    spec: RunSpec,
    quadrants: Sequence[int] = (1, 2, 3),
    *,
    sample_sizes: Sequence[int] | None = None,
    num_images: int | None = None,
    full_test_sizes: Sequence[int] = FULL_TEST_SIZES,
    progress: bool = False,
) -> dict:
    """Per setting, the curve and the full-test IS at ``full_test_sizes`` of ``spec``'s
    CVAE."""
    study = {"profile": spec.profile.name, "seed": spec.seed, "decoder_sees_input": spec.decoder_sees_input,
             "device": describe_device(spec.device), "settings": {}}  # fmt: skip
    for q in quadrants:
        models = get_trained_models(spec.for_quadrants(q), progress=progress)
        study["settings"][str(q)] = {
            "curve": convergence_curve(models, sample_sizes, num_images),
            "full_test_is": full_test_is(models, full_test_sizes),
        }
    return study
