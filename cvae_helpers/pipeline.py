"""One quadrant setting end to end: data, baseline and CVAE, trained once and cached, evaluated.

The command line and every chapter go through :func:`get_trained_models` with a
:class:`~cvae_helpers.config.RunSpec`, so a model trained by one is reused by the others
whenever the configuration matches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import RunSpec, library_versions, set_seed
from .data import QuadrantSplits, load_splits
from .evaluation import evaluate
from .models import CVAE, BaselineNet
from .training import baseline_config, train_baseline, train_cvae

# Held-out test digits whose completions are recorded after every CVAE epoch (for the animation).
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


def checkpoint_paths(spec: RunSpec) -> tuple[Path, Path]:
    """Where the baseline and the CVAE (or GSNN, or hybrid) of ``spec`` are cached (the folder
    and file names spell the cache key): ``cvae_pyz.pt``, ``gsnn_pyz.pt``, ``hybrid_pyz.pt``,
    and ``hybrid_a0.25_pyz.pt`` for a hybrid weight other than 0.5."""
    folder = spec.checkpoint_dir / spec.profile.name / f"q{spec.num_quadrant_inputs}_seed{spec.seed}"
    suffix = "" if spec.precision == "fp32" else f"_{spec.precision}"
    name = spec.family
    if spec.family == "hybrid" and spec.alpha != 0.5:
        name += f"_a{spec.alpha:g}"
    return (folder / f"baseline{suffix}.pt",
            folder / f"{name}_{DECODER_FILE_TAGS[spec.decoder_sees_input]}{suffix}.pt")


def get_splits(spec: RunSpec) -> QuadrantSplits:
    """The masked splits at the size the profile asks for (quick mode keeps a subset).

    They live on ``spec.device``, next to the models that will read them.
    """
    profile = spec.profile
    splits = load_splits(spec.num_quadrant_inputs, spec.data_dir, train_size=profile.train_size,
                         val_subset=profile.val_size, test_size=profile.test_size)
    return splits.to(spec.device)


def get_baseline(spec: RunSpec, splits: QuadrantSplits | None = None, *,
                 progress: bool = True) -> tuple[BaselineNet, dict]:
    """The cached baseline of ``spec``, trained (or resumed) first if need be."""
    splits = get_splits(spec) if splits is None else splits
    return train_baseline(splits, spec, checkpoint_path=checkpoint_paths(spec)[0],
                          progress=progress)


def get_trained_models(spec: RunSpec, *, progress: bool = True) -> TrainedModels:
    """Load the cached models of ``spec``, or train (or resume) them first."""
    splits = get_splits(spec)
    started = time.perf_counter()
    baseline, baseline_history = get_baseline(spec, splits, progress=progress)
    snapshot = torch.tensor([i for i in SNAPSHOT_INDICES if i < len(splits.test)])
    cvae, cvae_history = train_cvae(
        splits, baseline, spec, baseline_cfg=baseline_config(spec),
        checkpoint_path=checkpoint_paths(spec)[1], progress=progress,
        snapshot_inputs=splits.test.inputs[snapshot])
    return TrainedModels(spec, splits, baseline, cvae, baseline_history, cvae_history,
                         time.perf_counter() - started)


def metrics_record(models: TrainedModels) -> dict:
    """Evaluate on the test split and collect the numbers with the config that made them.

    A GSNN has no recognition network, so its record has the baseline's NLL and MC only.
    """
    spec, profile = models.spec, models.spec.profile
    started = time.perf_counter()
    set_seed(spec.seed)  # the same numbers whether the models were just trained or reused
    estimates = evaluate(models.baseline, models.cvae, models.splits.test, profile.num_samples)
    record: dict = {
        "num_quadrant_inputs": spec.num_quadrant_inputs,
        "profile": profile.name,
        "seed": spec.seed,
        "decoder_sees_input": spec.decoder_sees_input,
        "family": spec.family,
    }
    if spec.family == "hybrid":
        record["alpha"] = spec.alpha
    for name, estimate in estimates.items():
        record[name] = estimate.mean
        record[f"{name}_stderr"] = estimate.stderr
    record.update({
        "num_samples": profile.num_samples,
        "num_test_images": len(models.splits.test),
        "epochs_baseline": len(models.baseline_history["train_loss"]),
        "epochs_cvae": len(models.cvae_history["train_loss"]),
        "best_epoch_baseline": models.baseline_history["best_epoch"],
        "best_epoch_cvae": models.cvae_history["best_epoch"],
        "train_seconds": models.train_seconds,
        # what the epochs took when the models were trained: the same if they came from the cache
        "epoch_seconds_baseline": sum(models.baseline_history["epoch_seconds"]),
        "epoch_seconds_cvae": sum(models.cvae_history["epoch_seconds"]),
        "eval_seconds": time.perf_counter() - started,
        "profile_settings": profile.as_dict(),
        "versions": library_versions(),
    })
    return record


def run_setting(spec: RunSpec, *, progress: bool = True) -> dict:
    """Train (or reuse) and evaluate one setting; returns the metrics record."""
    return metrics_record(get_trained_models(spec, progress=progress))
