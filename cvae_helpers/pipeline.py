"""One quadrant setting end to end: data, baseline and CVAE, trained once and cached,
evaluated.

The command line and every chapter go through :func:`get_trained_models`, so a model
trained by one is reused by the others; at the full budget, a model the cache lacks is
first fetched from the release (:mod:`~cvae_helpers.pretrained`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import pyro
import torch

from . import pretrained
from .config import Profile, RunSpec, code_version, describe_device, library_versions
from .data import QuadrantSplits, load_splits, quadrant_label
from .evaluation import evaluate
from .models import CVAE, BaselineNet
from .pretrained import CachedModel
from .training import baseline_config, cvae_config, train_baseline, train_cvae

# Test digits whose completions are recorded after every CVAE epoch (the animation).
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
        """Where the two models came from, in one line (:func:`describe_origin`)."""
        return (
            f"{quadrant_label(self.spec.num_quadrant_inputs)}: baseline "
            f"{describe_origin(self.baseline_history)}, CVAE {describe_origin(self.cvae_history)}"
        )


def describe_origin(history: dict) -> str:
    """ "loaded pretrained weights (sha256 …)" or "trained here in N min"."""
    source = history.get("pretrained")
    if source is not None:
        return f"loaded pretrained weights (sha256 {source['sha256'][:12]}…)"
    return f"trained here in {sum(history['epoch_seconds']) / 60:.1f} min"


def trained_by(history: dict) -> str:
    """What trained a model's epochs, e.g. ``"Trace_ELBO, one Adam"``; before
    2026-12-04 its engines (``"pyro"``, ``"fast"``), and before those ``"unknown"``."""
    names = history.get("trained_with") or history.get("engines", [])
    return "+".join(sorted(set(names))) or "unknown"


def cached_models(spec: RunSpec) -> tuple[CachedModel, CachedModel]:
    """The baseline's and the CVAE family model's places in the checkpoint cache
    (label, file, cache key, name in the release), built once per run. The file
    names spell the key: ``cvae_pyz.pt``, ``hybrid_a0.25_pyxz_bf16.pt``..."""
    suffix = "" if spec.precision == "fp32" else f"_{spec.precision}"
    run = f"q{spec.num_quadrant_inputs}_seed{spec.seed}"

    def cached(model: str, profile: Profile, file: str, config: dict) -> CachedModel:
        relative = f"{profile.name}/{run}/{file}{suffix}.pt"
        label = f"{model}, {quadrant_label(spec.num_quadrant_inputs)}"
        return CachedModel(label, spec.checkpoint_dir / relative, config, relative)

    baseline = baseline_config(spec)
    family = f"{spec.family.label} {spec.decoder.label}"
    file = f"{spec.family.tag}_{spec.decoder.tag}"
    return (
        cached("baseline", spec.profile.for_baseline, "baseline", baseline),
        cached(family, spec.profile, file, cvae_config(spec, baseline)),
    )


def restore_pretrained(
    spec: RunSpec, models: Sequence[CachedModel], *, force_training: bool | None = None
) -> None:
    """Fetch the release's weights of those of ``models`` the cache lacks, at the
    full budget only (:func:`~cvae_helpers.pretrained.fetch_missing`, where
    ``force_training`` is explained); the quick budget never downloads."""
    if spec.profile.fetch_pretrained:
        pretrained.fetch_missing(models, force=force_training)


def get_splits(spec: RunSpec) -> QuadrantSplits:
    """The masked splits at the profile's sizes, moved to ``spec.device`` once."""
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
    """The cached models of ``spec``, fetched (:func:`restore_pretrained`) or trained
    (or resumed) first if need be."""
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
    seconds = time.perf_counter() - started
    return TrainedModels(
        spec, splits, baseline, cvae, baseline_history, cvae_history, seconds
    )


def metrics_record(models: TrainedModels) -> dict:
    """Evaluate on the test split and collect the numbers with the config that made
    them, named after the family (``cvae_nll_is``, ``gsnn_nll_mc``...)."""
    spec, profile = models.spec, models.spec.profile
    started = time.perf_counter()
    # the same numbers whether the models were just trained or reused
    pyro.set_rng_seed(spec.seed)
    test, num_samples = models.splits.test, profile.evaluation.num_samples
    estimates = evaluate(models.baseline, models.cvae, test, num_samples)
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
            "num_samples": num_samples,
            "num_test_images": len(test),
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
