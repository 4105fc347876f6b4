"""One quadrant setting end to end: data, baseline, CVAE (trained once, cached), evaluation.

The command line and every chapter go through :func:`get_trained_models`, so a model trained by
one is reused by the others whenever the configuration matches.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .config import (
    Profile,
    default_checkpoint_dir,
    get_profile,
    library_versions,
    project_root,
    resolve_device,
    set_seed,
)
from .data import QuadrantSplits, load_splits
from .evaluation import evaluate
from .models import CVAE, BaselineNet
from .training import baseline_config, train_baseline, train_cvae

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Where the committed full-budget reference results live (see results/reference/README.md).
REFERENCE_DIR = project_root() / "results" / "reference"
DECODER_DIRS = {False: "p_y_given_z", True: "p_y_given_xz"}

# Held-out test digits whose completions are recorded after every CVAE epoch (for the animation).
SNAPSHOT_INDICES = (18, 30, 61, 3, 4, 8)


@dataclass
class TrainedModels:
    """The splits, both trained models and their histories for one quadrant setting."""

    splits: QuadrantSplits
    baseline: BaselineNet
    cvae: CVAE
    baseline_history: dict
    cvae_history: dict
    profile: Profile
    seed: int
    train_seconds: float


def checkpoint_paths(num_quadrant_inputs: int, profile: Profile, seed: int,
                     decoder_sees_input: bool, checkpoint_dir: str | Path | None = None
                     ) -> tuple[Path, Path]:
    """Where the baseline and the CVAE of one configuration are cached."""
    root = Path(checkpoint_dir) if checkpoint_dir is not None else default_checkpoint_dir()
    folder = root / profile.name / f"q{num_quadrant_inputs}_seed{seed}"
    decoder = "pyxz" if decoder_sees_input else "pyz"
    return folder / "baseline.pt", folder / f"cvae_{decoder}.pt"


def _resolve(profile: Profile | str | None) -> Profile:
    return profile if isinstance(profile, Profile) else get_profile(profile)


def get_splits(num_quadrant_inputs: int, profile: Profile | str | None = None,
               data_dir: str | Path | None = None,
               device: str | torch.device | None = None) -> QuadrantSplits:
    """The masked splits at the size the profile asks for (quick mode keeps a subset).

    They live on ``device`` (default: CUDA when available, see ``resolve_device``), next to the
    models that will read them.
    """
    profile = _resolve(profile)
    splits = load_splits(num_quadrant_inputs, data_dir, train_size=profile.train_size,
                         val_subset=profile.val_size, test_size=profile.test_size)
    return splits.to(resolve_device(device))


def get_baseline(
    num_quadrant_inputs: int,
    profile: Profile | str | None = None,
    *,
    seed: int = 0,
    splits: QuadrantSplits | None = None,
    data_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> tuple[BaselineNet, dict]:
    """The cached baseline of this configuration, trained (or resumed) first if need be."""
    profile = _resolve(profile)
    if splits is None:
        splits = get_splits(num_quadrant_inputs, profile, data_dir, device)
    baseline_path, _ = checkpoint_paths(num_quadrant_inputs, profile, seed, False, checkpoint_dir)
    return train_baseline(splits, profile=profile, seed=seed, checkpoint_path=baseline_path,
                          device=device, progress=progress)


def get_trained_models(
    num_quadrant_inputs: int,
    profile: Profile | str | None = None,
    *,
    seed: int = 0,
    decoder_sees_input: bool = False,
    data_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> TrainedModels:
    """Load the cached models of this configuration, or train (or resume) them first."""
    profile = _resolve(profile)
    device = resolve_device(device)
    splits = get_splits(num_quadrant_inputs, profile, data_dir, device)
    _, cvae_path = checkpoint_paths(num_quadrant_inputs, profile, seed, decoder_sees_input,
                                    checkpoint_dir)
    started = time.perf_counter()
    baseline, baseline_history = get_baseline(
        num_quadrant_inputs, profile, seed=seed, splits=splits, checkpoint_dir=checkpoint_dir,
        device=device, progress=progress)
    snapshot = torch.tensor([i for i in SNAPSHOT_INDICES if i < len(splits.test)])
    cvae, cvae_history = train_cvae(
        splits, baseline, baseline_cfg=baseline_config(num_quadrant_inputs, profile, seed),
        profile=profile, seed=seed, decoder_sees_input=decoder_sees_input,
        checkpoint_path=cvae_path, device=device, progress=progress,
        snapshot_inputs=splits.test.inputs[snapshot])
    return TrainedModels(splits, baseline, cvae, baseline_history, cvae_history, profile, seed,
                         time.perf_counter() - started)


def run_setting(num_quadrant_inputs: int, profile: Profile | str | None = None, *,
                seed: int = 0, decoder_sees_input: bool = False,
                data_dir: str | Path | None = None, checkpoint_dir: str | Path | None = None,
                device: str | torch.device | None = None, progress: bool = True) -> dict:
    """Train (or reuse) and evaluate one setting; returns the metrics record."""
    models = get_trained_models(num_quadrant_inputs, profile, seed=seed,
                                decoder_sees_input=decoder_sees_input, data_dir=data_dir,
                                checkpoint_dir=checkpoint_dir, device=device, progress=progress)
    return metrics_record(models, decoder_sees_input)


def metrics_record(models: TrainedModels, decoder_sees_input: bool) -> dict:
    """Evaluate on the test split and collect the numbers with the config that made them."""
    profile = models.profile
    started = time.perf_counter()
    set_seed(models.seed)  # the same numbers whether the models were just trained or reused
    estimates = evaluate(models.baseline, models.cvae, models.splits.test, profile.num_samples)
    record: dict = {
        "num_quadrant_inputs": models.splits.num_quadrant_inputs,
        "profile": profile.name,
        "seed": models.seed,
        "decoder_sees_input": decoder_sees_input,
    }
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
        "eval_seconds": time.perf_counter() - started,
        "profile_settings": profile.as_dict(),
        "versions": library_versions(),
    })
    return record


ROWS = [
    ("NN (baseline)", "baseline_nll"),
    ("CVAE (MC)", "cvae_nll_mc"),
    ("CVAE (IS)", "cvae_nll_is"),
    ("CVAE (−ELBO)", "cvae_neg_elbo"),
]


def results_table(records: list[dict]) -> str:
    """A markdown table: estimators as rows, 1/2/3 quadrants as columns, mean ± stderr."""
    by_q = {r["num_quadrant_inputs"]: r for r in records}
    columns = [1, 2, 3]
    header = "| negative CLL (nats/image) | " + " | ".join(
        f"{q} quadrant{'s' * (q > 1)}" for q in columns) + " |"
    lines = [header, "|---" * (len(columns) + 1) + "|"]
    for label, key in ROWS:
        cells = [f"{by_q[q][key]:.2f} ± {by_q[q][key + '_stderr']:.2f}" if q in by_q else "–"
                 for q in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    gap = [f"{by_q[q]['baseline_nll'] - by_q[q]['cvae_nll_is']:.2f}" if q in by_q else "–"
           for q in columns]
    lines.append("| gap: NN − CVAE (IS) | " + " | ".join(gap) + " |")
    return "\n".join(lines) + "\n"


def write_results(records: list[dict], output_dir: str | Path) -> None:
    """``metrics_q{N}.json`` per setting and ``results.md`` with the table of all of them."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for record in records:
        path = output_dir / f"metrics_q{record['num_quadrant_inputs']}.json"
        path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    first = records[0]
    same_run = ("profile", "seed", "decoder_sees_input")
    all_records = [r for r in load_results(output_dir)
                   if all(r[k] == first[k] for k in same_run)]
    decoder = "p(y|x,z) (paper)" if first["decoder_sees_input"] else "p(y|z) (Pyro example)"
    text = (f"# Negative conditional log-likelihood on the MNIST test set\n\n"
            f"Profile `{first['profile']}`, seed {first['seed']}, decoder {decoder}, "
            f"S = {first['num_samples']} samples, {first['num_test_images']} test images; "
            "mean ± standard error over images. Lower is better.\n\n"
            + results_table(all_records))
    (output_dir / "results.md").write_text(text)


def load_results(output_dir: str | Path) -> list[dict]:
    """Every ``metrics_q*.json`` in ``output_dir``, sorted by number of quadrants."""
    records = [json.loads(p.read_text()) for p in sorted(Path(output_dir).glob("metrics_q*.json"))]
    return sorted(records, key=lambda r: r["num_quadrant_inputs"])


def completion_grid(models: TrainedModels, fixed: int = 5, ambiguous: int = 5,
                    num_samples: int = 5, pool_size: int = 300, seed: int = 0) -> Figure:
    """The sample grid of the evaluation chapter and the reference run, for one setting.

    Columns: the first ``fixed`` test digits, then the ``ambiguous`` test digits among the
    next ``pool_size`` whose CVAE samples disagree most. Rows: input, truth, NN, and
    ``num_samples`` CVAE samples (z ~ p(z|x)), all seeded by ``seed``.
    """
    from .plotting import most_diverse, sample_grid  # matplotlib only once something is drawn

    test = models.splits.test
    generator = torch.Generator().manual_seed(seed)
    pool = torch.arange(fixed, min(fixed + pool_size, len(test)))
    chosen = pool[most_diverse(models.cvae, test.inputs[pool], ambiguous, generator=generator)]
    indices = torch.cat([torch.arange(fixed), chosen])
    q = models.splits.num_quadrant_inputs
    title = (f"{q} quadrant{'s' * (q > 1)} given (test digits {fixed} fixed + {ambiguous} most "
             f"ambiguous); labels {test.labels[indices].tolist()}")
    return sample_grid(models.baseline, models.cvae, test.inputs[indices], test.targets[indices],
                       num_samples=num_samples, generator=generator, title=title)
