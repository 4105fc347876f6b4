"""One quadrant setting end to end: data, baseline and CVAE, trained once and cached,
evaluated.

The command line and every chapter go through :func:`get_trained_models` with a
:class:`~cvae_helpers.config.RunSpec`, so a model trained by one is reused by the others
whenever the configuration matches. At the full budget, a model the cache lacks is first
fetched from the release's pretrained weights (:mod:`~cvae_helpers.pretrained`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import pretrained
from .config import (
    Profile,
    RunSpec,
    code_version,
    describe_device,
    library_versions,
    set_seed,
)
from .data import QuadrantSplits, load_splits, quadrant_label
from .evaluation import evaluate
from .models import CVAE, BaselineNet
from .pretrained import CachedModel
from .training import baseline_config, cvae_config, train_baseline, train_cvae

# Held-out test digits whose completions are recorded after every CVAE epoch (for the
# animation).
SNAPSHOT_INDICES = (18, 30, 61, 3, 4, 8)


@dataclass
class TrainedModels:
    """The splits, both trained models and their histories for one run spec."""

    spec: RunSpec
    splits: QuadrantSplits
    baseline: BaselineNet
    cvae: CVAE
    baseline_history: dict
    cvae_history: dict
    train_seconds: float

    def origin(self) -> str:
        """Where the two models came from, in one line: the release's pretrained weights
        (with their SHA-256) or training on this machine (with its minutes)."""
        return (
            f"{quadrant_label(self.spec.num_quadrant_inputs)}: baseline "
            f"{describe_origin(self.baseline_history)}, CVAE {describe_origin(self.cvae_history)}"
        )


def describe_origin(history: dict) -> str:
    """ "loaded pretrained weights (sha256 …)" or "trained here in N min", from a
    history."""
    source = history.get("pretrained")
    if source is not None:
        return f"loaded pretrained weights (sha256 {source['sha256'][:12]}…)"
    return f"trained here in {sum(history['epoch_seconds']) / 60:.1f} min"


def trained_by(history: dict) -> str:
    """What trained a model's epochs, e.g. ``"Trace_ELBO, one Adam"``; a model of the
    code before 2026-12-04 says which of its two engines (``"pyro"``, ``"fast"``), and
    ``"unknown"`` a history older than that record."""
    names = history.get("trained_with") or history.get("engines", [])
    return "+".join(sorted(set(names))) or "unknown"


def cached_models(spec: RunSpec) -> tuple[CachedModel, CachedModel]:
    """The baseline's and the CVAE's (or GSNN's, or hybrid's) places in the
    checkpoint cache: label, file, cache key, and name in the release. Built once
    per run and passed down. The folder and file names spell the cache key:
    ``cvae_pyz.pt``, ``gsnn_pyz.pt``, ``hybrid_pyz.pt``, and
    ``hybrid_a0.25_pyz.pt`` for a hybrid weight other than 0.5."""
    suffix = "" if spec.precision == "fp32" else f"_{spec.precision}"
    setting = quadrant_label(spec.num_quadrant_inputs)
    run = f"q{spec.num_quadrant_inputs}_seed{spec.seed}"

    def cached(label: str, profile: Profile, file: str, config: dict) -> CachedModel:
        relative = f"{profile.name}/{run}/{file}"
        return CachedModel(label, spec.checkpoint_dir / relative, config, relative)

    baseline = baseline_config(spec)
    return (
        cached(
            f"baseline, {setting}",
            spec.profile.for_baseline,
            f"baseline{suffix}.pt",
            baseline,
        ),
        cached(
            f"{spec.family.label} {spec.decoder.label}, {setting}",
            spec.profile,
            f"{spec.family.tag}_{spec.decoder.tag}{suffix}.pt",
            cvae_config(spec, baseline),
        ),
    )


def restore_pretrained(
    spec: RunSpec,
    models: Sequence[CachedModel],
    *,
    force_training: bool | None = None,
) -> None:
    """Fetch the release's weights of those of ``models`` (:func:`cached_models`)
    the cache lacks, at the full budget only: the quick budget never downloads.

    ``force_training`` (default ``$CVAE_FORCE_TRAINING``) downloads nothing, and a
    cached model that came from the release is deleted so that it is trained here
    (:func:`~cvae_helpers.pretrained.fetch_missing`, which the classifier uses too).
    Without network, or when the release has nothing for this configuration, one line
    says so and training goes ahead; a file that fails its SHA-256 check is an error
    (:class:`~cvae_helpers.pretrained.PretrainedIntegrityError`).
    """
    if spec.profile.fetch_pretrained:
        pretrained.fetch_missing(models, force=force_training)


def get_splits(spec: RunSpec) -> QuadrantSplits:
    """The masked splits at the size the profile asks for (quick mode keeps a subset).

    They are moved to ``spec.device`` here, once, next to the models that will read
    them.
    """
    profile = spec.profile
    splits = load_splits(
        spec.num_quadrant_inputs,
        spec.data_dir,
        train_size=profile.training.train_size,
        val_subset=profile.training.val_size,
        test_size=profile.evaluation.test_size,
    )
    return splits.to(spec.device)


def get_baseline(
    spec: RunSpec,
    splits: QuadrantSplits | None = None,
    *,
    progress: bool = True,
    force_training: bool | None = None,
) -> tuple[BaselineNet, dict]:
    """The cached baseline of ``spec``, fetched (:func:`restore_pretrained`) or trained
    (or resumed) first if need be."""
    baseline = cached_models(spec)[0]
    restore_pretrained(spec, [baseline], force_training=force_training)
    splits = get_splits(spec) if splits is None else splits
    return train_baseline(
        splits,
        spec,
        checkpoint_path=baseline.path,
        config=baseline.config,
        progress=progress,
    )


def get_trained_models(
    spec: RunSpec, *, progress: bool = True, force_training: bool | None = None
) -> TrainedModels:
    """Load the cached models of ``spec``, or fetch the release's pretrained weights
    (full budget, unless ``force_training`` or ``$CVAE_FORCE_TRAINING``), or train (or
    resume) them."""
    cached_baseline, cached_cvae = cached_models(spec)
    restore_pretrained(
        spec, [cached_baseline, cached_cvae], force_training=force_training
    )
    splits = get_splits(spec)
    started = time.perf_counter()
    baseline, baseline_history = train_baseline(
        splits,
        spec,
        checkpoint_path=cached_baseline.path,
        config=cached_baseline.config,
        progress=progress,
    )
    snapshot = torch.tensor([i for i in SNAPSHOT_INDICES if i < len(splits.test)])
    cvae, cvae_history = train_cvae(
        splits,
        baseline,
        spec,
        checkpoint_path=cached_cvae.path,
        config=cached_cvae.config,
        progress=progress,
        snapshot_inputs=splits.test.inputs[snapshot],
    )
    return TrainedModels(
        spec,
        splits,
        baseline,
        cvae,
        baseline_history,
        cvae_history,
        time.perf_counter() - started,
    )


def metrics_record(models: TrainedModels) -> dict:
    """Evaluate on the test split and collect the numbers with the config that made
    them.

    The estimates are named after the family (``cvae_nll_is``, ``gsnn_nll_mc``, ...); a
    GSNN has no recognition network, so its record has the baseline's NLL and MC only.
    """
    spec, profile = models.spec, models.spec.profile
    started = time.perf_counter()
    set_seed(
        spec.seed
    )  # the same numbers whether the models were just trained or reused
    estimates = evaluate(
        models.baseline,
        models.cvae,
        models.splits.test,
        profile.evaluation.num_samples,
    )
    record: dict = {
        "num_quadrant_inputs": spec.num_quadrant_inputs,
        "profile": profile.name,
        "seed": spec.seed,
        "decoder_sees_input": spec.decoder_sees_input,
        **spec.family.key(),
    }
    keys = {name: spec.family.result_key(name) for name in spec.family.estimators}
    for name, estimate in estimates.items():
        key = keys.get(name, name)  # "baseline_nll" keeps its name
        record[key] = estimate.mean
        record[f"{key}_stderr"] = estimate.stderr
    record.update(
        {
            "num_samples": profile.evaluation.num_samples,
            "num_test_images": len(models.splits.test),
            "epochs_baseline": len(models.baseline_history["train_loss"]),
            "epochs_cvae": len(models.cvae_history["train_loss"]),
            "best_epoch_baseline": models.baseline_history["best_epoch"],
            "best_epoch_cvae": models.cvae_history["best_epoch"],
            "train_seconds": models.train_seconds,
            # what the epochs took when the models were trained: the same if they came
            # from the cache
            "epoch_seconds_baseline": sum(models.baseline_history["epoch_seconds"]),
            "epoch_seconds_cvae": sum(models.cvae_history["epoch_seconds"]),
            "eval_seconds": time.perf_counter() - started,
            # what trained each model (per epoch, joined); the commit says which code
            "trained_by": {
                "baseline": trained_by(models.baseline_history),
                "cvae": trained_by(models.cvae_history),
            },
            "code": code_version(),
            # a seed reproduces bit for bit only on the same kernels and threads
            "device": describe_device(spec.device),
            "profile_settings": profile.as_dict(),
            "versions": library_versions(),
        }
    )
    return record


def run_setting(
    spec: RunSpec, *, progress: bool = True, force_training: bool | None = None
) -> dict:
    """Train (or reuse, or fetch) and evaluate one setting; returns the metrics
    record."""
    return metrics_record(
        get_trained_models(spec, progress=progress, force_training=force_training)
    )
