"""One quadrant setting end to end: data, baseline and CVAE, trained once and cached,
evaluated.

The command line and every chapter go through :func:`get_trained_models` with a
:class:`~cvae_helpers.config.RunSpec`, so a model trained by one is reused by the others
whenever the configuration matches. At the full budget, a model the cache lacks is first
fetched from the release's pretrained weights (:mod:`~cvae_helpers.pretrained`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import pretrained
from .config import (
    RunSpec,
    code_version,
    describe_device,
    library_versions,
    set_seed,
)
from .data import QuadrantSplits, load_splits, quadrant_label
from .evaluation import evaluate
from .families import DEFAULT_ALPHA
from .models import CVAE, BaselineNet
from .training import baseline_config, cvae_config, train_baseline, train_cvae

# Held-out test digits whose completions are recorded after every CVAE epoch (for the
# animation).
SNAPSHOT_INDICES = (18, 30, 61, 3, 4, 8)
# How checkpoint file names spell the two generation networks.
DECODER_FILE_TAGS = {False: "pyz", True: "pyxz"}


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


def checkpoint_paths(spec: RunSpec) -> tuple[Path, Path]:
    """Where the baseline and the CVAE (or GSNN, or hybrid) of ``spec`` are cached (the
    folder and file names spell the cache key): ``cvae_pyz.pt``, ``gsnn_pyz.pt``,
    ``hybrid_pyz.pt``, and ``hybrid_a0.25_pyz.pt`` for a hybrid weight other than
    0.5."""

    def folder(profile):
        return (
            spec.checkpoint_dir
            / profile.name
            / f"q{spec.num_quadrant_inputs}_seed{spec.seed}"
        )

    suffix = "" if spec.precision == "fp32" else f"_{spec.precision}"
    name = spec.family.name
    if spec.family.weighted and spec.alpha != DEFAULT_ALPHA:  # a hybrid's weight
        name += f"_a{spec.alpha:g}"
    decoder = DECODER_FILE_TAGS[spec.decoder_sees_input]
    return (
        folder(spec.profile.for_baseline) / f"baseline{suffix}.pt",
        folder(spec.profile) / f"{name}_{decoder}{suffix}.pt",
    )


def checkpoint_configs(spec: RunSpec) -> tuple[dict, dict]:
    """The configurations the cached baseline and CVAE of ``spec`` must have (their
    cache keys)."""
    with torch.device(
        "meta"
    ):  # only the architecture is read: no weights are allocated
        width = spec.profile.hidden_units
        cvae = CVAE(
            hidden_1=width, hidden_2=width, decoder_sees_input=spec.decoder_sees_input
        )
    base = baseline_config(spec)
    return base, cvae_config(spec, cvae, base)


def restore_pretrained(
    spec: RunSpec,
    which: tuple[int, ...] = (0, 1),
    *,
    force_training: bool | None = None,
) -> None:
    """Fetch the release's weights of the models of ``spec`` the cache lacks (``which``:
    0 the baseline, 1 the CVAE), at the full budget only: the quick budget never
    downloads.

    ``force_training`` (default ``$CVAE_FORCE_TRAINING``) downloads nothing, and a
    cached model that came from the release is deleted so that it is trained here
    (:func:`~cvae_helpers.pretrained.fetch_missing`, which the classifier uses too).
    Without network, or when the release has nothing for this configuration, one line
    says so and training goes ahead; a file that fails its SHA-256 check is an error
    (:class:`~cvae_helpers.pretrained.PretrainedIntegrityError`).
    """
    if not spec.profile.fetch_pretrained:
        return
    paths, configs = checkpoint_paths(spec), checkpoint_configs(spec)
    labels = (
        f"baseline, {quadrant_label(spec.num_quadrant_inputs)}",
        f"{spec.family.label} {'p(y|x,z)' if spec.decoder_sees_input else 'p(y|z)'}, "
        f"{quadrant_label(spec.num_quadrant_inputs)}",
    )
    pretrained.fetch_missing(
        [
            pretrained.WantedCheckpoint(
                labels[i],
                paths[i],
                configs[i],
                paths[i].relative_to(spec.checkpoint_dir).as_posix(),
            )
            for i in which
        ],
        force=force_training,
    )


def get_splits(spec: RunSpec) -> QuadrantSplits:
    """The masked splits at the size the profile asks for (quick mode keeps a subset).

    They live on ``spec.device``, next to the models that will read them.
    """
    profile = spec.profile
    splits = load_splits(
        spec.num_quadrant_inputs,
        spec.data_dir,
        train_size=profile.train_size,
        val_subset=profile.val_size,
        test_size=profile.test_size,
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
    restore_pretrained(spec, (0,), force_training=force_training)
    splits = get_splits(spec) if splits is None else splits
    return train_baseline(
        splits,
        spec,
        checkpoint_path=checkpoint_paths(spec)[0],
        progress=progress,
    )


def get_trained_models(
    spec: RunSpec, *, progress: bool = True, force_training: bool | None = None
) -> TrainedModels:
    """Load the cached models of ``spec``, or fetch the release's pretrained weights
    (full budget, unless ``force_training`` or ``$CVAE_FORCE_TRAINING``), or train (or
    resume) them."""
    restore_pretrained(spec, force_training=force_training)
    splits = get_splits(spec)
    started = time.perf_counter()
    baseline, baseline_history = train_baseline(
        splits,
        spec,
        checkpoint_path=checkpoint_paths(spec)[0],
        progress=progress,
    )
    snapshot = torch.tensor([i for i in SNAPSHOT_INDICES if i < len(splits.test)])
    cvae, cvae_history = train_cvae(
        splits,
        baseline,
        spec,
        checkpoint_path=checkpoint_paths(spec)[1],
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
        profile.num_samples,
    )
    record: dict = {
        "num_quadrant_inputs": spec.num_quadrant_inputs,
        "profile": profile.name,
        "seed": spec.seed,
        "decoder_sees_input": spec.decoder_sees_input,
        "family": spec.family.name,
    }
    if spec.family.weighted:
        record["alpha"] = spec.alpha
    keys = {name: spec.family.result_key(name) for name in spec.family.estimators}
    for name, estimate in estimates.items():
        key = keys.get(name, name)  # "baseline_nll" keeps its name
        record[key] = estimate.mean
        record[f"{key}_stderr"] = estimate.stderr
    record.update(
        {
            "num_samples": profile.num_samples,
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
