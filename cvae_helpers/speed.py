"""Measuring speed: seconds per 60k-image training epoch (``python -m cvae_helpers bench``).

Two data paths are timed with the same networks and steps:

- ``memory`` (this package): each split masked once, batches by one indexing call, and the
  frozen baseline's guess y_hat computed once per dataset.
- ``pyro_example`` (the Pyro example's design): a per-item ``Dataset`` that turns each PIL image
  into a tensor and masks it in a transform, batched by a ``DataLoader``, with y_hat recomputed
  by the baseline inside every CVAE step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import torch
from pyro.infer import Trace_ELBO
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import MNIST
from torchvision.transforms import functional as TF

from .config import autocast_dtype, default_data_dir, resolve_device, resolve_precision, set_seed
from .data import (
    NUM_TRAIN_VAL,
    TensorBatches,
    batched,
    hidden_pixels,
    load_mnist,
    load_splits,
    mask_quadrants,
)
from .models import CVAE, BaselineNet, masked_bce
from .results import markdown_table
from .training import make_adam, train_step

PIPELINES = ("memory", "pyro_example", "both")


class PyroExampleMNIST(Dataset):
    """The Pyro example's per-item pipeline: PIL image -> tensor -> quadrant mask, one at a time.

    Items are dicts ``{"input": (28, 28), "output": (28, 28)}`` as in the Pyro example.
    """

    def __init__(self, root: str | Path, num_quadrant_inputs: int) -> None:
        self.mnist = MNIST(root, train=True, download=False)
        self.num_quadrant_inputs = num_quadrant_inputs

    def __len__(self) -> int:
        return len(self.mnist)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, _ = self.mnist[index]  # a PIL image
        tensor = TF.to_tensor(image)  # (1, 28, 28) in [0, 1]
        inputs, targets = mask_quadrants(tensor, self.num_quadrant_inputs)
        return {"input": inputs[0], "output": targets[0]}


def _time_steps(batches: Iterator, step: Callable, num_batches: int, warmup: int,
                device: torch.device) -> float:
    """Seconds per batch, data handling included, after ``warmup`` untimed batches."""
    for _ in range(warmup):
        step(*next(batches))
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(num_batches):
        step(*next(batches))
    _synchronize(device)
    return (time.perf_counter() - started) / num_batches


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _endless(loader) -> Iterator:
    while True:
        yield from loader


def _pyro_example_batches(loader: DataLoader, device: torch.device) -> Iterator:
    for batch in _endless(loader):
        yield batch["input"].to(device), batch["output"].to(device)


def _steps(seed: int, device: torch.device, precision: str,
           cvae_loss: str = "neg_elbo") -> tuple[Callable, Callable, CVAE]:
    """Fresh default networks, seeded: the baseline's step, the CVAE's step and the CVAE.

    The steps are the training's: the same losses, autocast dtype and fused Adam. The CVAE's
    loss is ``cvae_loss``: ``"neg_elbo"`` (what training uses), or ``"trace_elbo"`` (Pyro's
    ``Trace_ELBO`` on ``model`` and ``guide``, as the Pyro example trains).
    """
    set_seed(seed)
    baseline = BaselineNet().to(device)
    baseline_opt = make_adam(baseline.parameters(), 1e-3)
    cvae = CVAE(baseline=BaselineNet()).to(device)
    cvae_opt = make_adam([p for n, p in cvae.named_parameters()
                          if not n.startswith("baseline.")], 1e-3)
    dtype = autocast_dtype(precision, device)
    elbo = Trace_ELBO()

    def baseline_step(inputs, targets):
        train_step(lambda x, y: masked_bce(baseline.logits(x), y).sum(), (inputs, targets),
                   baseline_opt, autocast=dtype)

    def cvae_step(inputs, targets, y_hat=None, pixels=None):  # y_hat None: computed in the step
        if cvae_loss == "trace_elbo":
            loss_fn = partial(elbo.differentiable_loss, cvae.model, cvae.guide)
        else:
            loss_fn = partial(cvae.neg_elbo, pixels=pixels)
        train_step(loss_fn, (inputs, targets, y_hat), cvae_opt, autocast=dtype)

    return baseline_step, cvae_step, cvae


def benchmark(num_quadrant_inputs: int = 1, num_batches: int = 50, batch_size: int = 128,
              warmup: int = 5, data_dir=None, seed: int = 0, pipeline: str = "memory",
              device: str | torch.device | None = None, precision: str | None = None) -> dict:
    """Time the default baseline and CVAE training steps on ``device`` (default: as training).

    Returns seconds for one epoch of 60,000 images (the whole MNIST training set),
    extrapolated from ``num_batches`` timed batches with data handling included:
    ``baseline_epoch_s`` and ``cvae_epoch_s`` for the in-memory path (plus
    ``load_and_mask_s``, reading and masking the images once per process, and
    ``y_hat_precompute_s``, the one-off cost of the baseline's guesses for 60k images), and with
    ``pipeline="pyro_example"`` or ``"both"`` the ``pyro_example_*`` figures of the per-item
    path and the ratios ``pyro_example / memory`` (``*_speedup``). ``precision="bf16"`` times
    the mixed-precision steps (the same keys; ``precision`` in the result says which ran).
    """
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}.")
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    batches_per_epoch = NUM_TRAIN_VAL / batch_size
    result: dict = {"batch_size": batch_size, "num_batches": num_batches,
                    "num_quadrant_inputs": num_quadrant_inputs, "device": str(device),
                    "precision": precision, "threads": torch.get_num_threads()}

    if pipeline in ("memory", "both"):
        started = time.perf_counter()
        split = load_splits(num_quadrant_inputs, data_dir).train.to(device)
        result["load_and_mask_s"] = round(time.perf_counter() - started, 3)
        baseline_step, cvae_step, cvae = _steps(seed, device, precision)
        loader = TensorBatches(split.inputs, split.targets, batch_size=batch_size, seed=seed)
        baseline_s = _time_steps(_endless(loader), baseline_step, num_batches, warmup, device)
        started = time.perf_counter()
        y_hat = batched(cvae.baseline_guess, split.inputs)
        _synchronize(device)
        y_hat_s = (time.perf_counter() - started) * NUM_TRAIN_VAL / len(split)
        pixels = hidden_pixels(split.inputs)
        loader = TensorBatches(split.inputs, split.targets, y_hat, batch_size=batch_size,
                               seed=seed)
        batches = ((*batch, pixels) for batch in _endless(loader))
        cvae_s = _time_steps(batches, cvae_step, num_batches, warmup, device)
        result.update(baseline_epoch_s=round(baseline_s * batches_per_epoch, 2),
                      cvae_epoch_s=round(cvae_s * batches_per_epoch, 2),
                      y_hat_precompute_s=round(y_hat_s, 3))

    if pipeline in ("pyro_example", "both"):
        root = Path(data_dir) if data_dir is not None else default_data_dir()
        load_mnist(root, train=True)  # the same clear errors as the main path if files are missing
        dataset = PyroExampleMNIST(root, num_quadrant_inputs)
        baseline_step, cvae_step, _ = _steps(seed, device, precision, cvae_loss="trace_elbo")
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0,
                            generator=torch.Generator().manual_seed(seed))
        for model, step in (("baseline", baseline_step), ("cvae", cvae_step)):
            seconds = _time_steps(_pyro_example_batches(loader, device), step, num_batches,
                                  warmup, device)
            result[f"pyro_example_{model}_epoch_s"] = round(seconds * batches_per_epoch, 2)

    if pipeline == "both":
        for model in ("baseline", "cvae"):
            result[f"{model}_speedup"] = round(
                result[f"pyro_example_{model}_epoch_s"] / result[f"{model}_epoch_s"], 2)
    return result


# How a profiled ATen op is counted in :func:`profile_cvae_step`.
MATMUL_OPS = {"mm", "addmm", "bmm", "baddbmm", "addmv", "mv", "matmul", "linear"}
STEP_PARTS = ("matmuls", "optimizer", "other tensor ops", "Python and framework")


def _step_part(op: str) -> str | None:
    if not op.startswith("aten::"):
        return None  # autograd nodes, record_function ranges: their time is in the remainder
    name = op.removeprefix("aten::")
    if name in MATMUL_OPS or name.startswith("mkldnn"):
        return "matmuls"
    if "adam" in name or name.startswith("_foreach"):
        return "optimizer"
    return "other tensor ops"


def profile_cvae_step(num_steps: int = 30, warmup: int = 5, batch_size: int = 128,
                      num_quadrant_inputs: int = 1, data_dir=None, seed: int = 0,
                      precision: str | None = None) -> dict[str, dict[str, float]]:
    """Milliseconds per CVAE training step on the CPU, split into parts, for both losses.

    For ``"trace_elbo"`` (Pyro's ``Trace_ELBO`` on model and guide) and ``"neg_elbo"`` (the
    hand-written equivalent that training uses), ``torch.profiler`` adds up the self time of
    the ATen ops: matmuls (forward and backward), the optimizer (fused Adam), and every other
    tensor op (activations, log-probabilities, masking, batching). The rest of the step's wall
    time is Python and framework: Pyro's tracing, the autograd engine's bookkeeping, the loop.
    ``"total"`` is the wall time per step under the profiler (a little above an unprofiled step).
    """
    from torch.profiler import ProfilerActivity, profile

    device = torch.device("cpu")
    precision = resolve_precision(precision, device)
    count = (num_steps + warmup) * batch_size
    split = load_splits(num_quadrant_inputs, data_dir, train_size=count).train
    with profile(activities=[ProfilerActivity.CPU]):
        torch.ones(1).add_(1)  # the profiler's first session pays its start-up; not a step's
    report = {}
    for loss in ("trace_elbo", "neg_elbo"):
        _, cvae_step, cvae = _steps(seed, device, precision, cvae_loss=loss)
        y_hat = batched(cvae.baseline_guess, split.inputs)
        pixels = hidden_pixels(split.inputs) if loss == "neg_elbo" else None
        loader = TensorBatches(split.inputs, split.targets, y_hat, batch_size=batch_size, seed=seed)
        batches = ((*batch, pixels) for batch in _endless(loader))
        for _ in range(warmup):
            cvae_step(*next(batches))
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            started = time.perf_counter()
            for _ in range(num_steps):
                cvae_step(*next(batches))
            wall_ms = (time.perf_counter() - started) * 1e3 / num_steps
        parts = dict.fromkeys(STEP_PARTS, 0.0)
        for event in profiler.key_averages():
            part = _step_part(event.key)
            if part is not None:
                parts[part] += event.self_cpu_time_total / 1e3 / num_steps
        parts["Python and framework"] = wall_ms - sum(parts.values())
        report[loss] = {**{k: round(v, 3) for k, v in parts.items()}, "total": round(wall_ms, 3)}
    return report


def profile_table(report: dict[str, dict[str, float]]) -> str:
    """Markdown: milliseconds per step and share of the step, per part, for both losses."""
    losses = [("trace_elbo", "Pyro `Trace_ELBO`"), ("neg_elbo", "`CVAE.neg_elbo`")]
    rows = [[part, *(f"{report[key][part]:.2f} ({report[key][part] / report[key]['total']:.0%})"
                     for key, _ in losses)] for part in STEP_PARTS]
    rows.append(["total", *(f"{report[key]['total']:.2f}" for key, _ in losses)])
    return markdown_table(["ms per CVAE step (batch 128)", *(label for _, label in losses)], rows)


def bench_table(bench: dict) -> str:
    """Markdown: seconds per 60k-image epoch, in-memory against the Pyro example's pipeline."""
    rows = []
    for label, key in (("baseline", "baseline"), ("CVAE", "cvae")):
        memory, pyro_example = bench[f"{key}_epoch_s"], bench[f"pyro_example_{key}_epoch_s"]
        rows.append([label, f"{memory:.1f}", f"{pyro_example:.1f}", f"{pyro_example / memory:.1f}×"])
    return markdown_table(["seconds per 60k-image epoch", "in-memory (this book)",
                           "per-item DataLoader (Pyro example)", "ratio"], rows)
