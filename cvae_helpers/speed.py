"""Measuring speed: seconds per 60k-image training epoch (``python -m cvae_helpers
bench``), for three training paths with the same networks, in one run:

- ``pyro``: the book's step (:func:`~cvae_helpers.training.make_steps`), ``Trace_ELBO``
  with one fused Adam on in-memory batches (masked once, y_hat computed once);
- ``svi``: Pyro's ``SVI`` with its per-parameter ``Adam`` on the same batches;
- ``pyro_example``: the Pyro example's per-item ``Dataset`` (PIL image to tensor, masked
  in a transform) batched by a ``DataLoader``, with ``SVI`` and y_hat recomputed by the
  baseline inside every CVAE step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pyro
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import MNIST
from torchvision.transforms import functional as TF

from .config import RunSpec, describe_device, set_seed
from .data import (
    NUM_TRAIN_VAL,
    TensorBatches,
    batched,
    load_mnist,
    load_splits,
    mask_quadrants,
)
from .models import CVAE, BaselineNet, masked_bce
from .results import markdown_table
from .training import baseline_steps, make_steps, make_svi

PATHS = ("pyro", "svi", "pyro_example")


class PyroExampleMNIST(Dataset):
    """The Pyro example's per-item pipeline: PIL image -> tensor -> quadrant
    mask, one at a time.

    Items are dicts ``{"input": (28, 28), "output": (28, 28)}`` as in the Pyro
    example.
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


WARMUP = 5  # untimed batches before each timing


def _time_steps(batches: Iterator, step: Callable, num_batches: int, device) -> float:
    """Seconds per batch, data handling included, after ``WARMUP`` untimed batches."""
    for _ in range(WARMUP):
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


def textbook_baseline_step(net: BaselineNet, lr: float) -> Callable:
    """The baseline's step as the Pyro example writes it: ``torch.optim.Adam``
    (one kernel per parameter tensor) and the loss read back as a number every
    step."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)

    def step(xs: torch.Tensor, ys: torch.Tensor) -> float:
        loss = masked_bce(net.logits(xs), ys).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def _steps(spec: RunSpec, path: str = "pyro") -> tuple[Callable, Callable, CVAE]:
    """Fresh default networks, seeded, and ``path``'s training steps for them: the
    baseline's ``step(xs, ys)``, the CVAE's ``step(xs, ys[, y_hat])`` and the CVAE.
    ``"pyro"``: the book's steps; ``"svi"`` and ``"pyro_example"``: the textbook
    ones."""
    set_seed(spec.seed)
    baseline = BaselineNet().to(spec.device)
    cvae = CVAE(baseline=BaselineNet()).to(spec.device)
    pyro.clear_param_store()
    if path == "pyro":
        return baseline_steps(baseline, spec).step, make_steps(cvae, spec).step, cvae
    lr = spec.profile.training.learning_rate
    svi = make_svi(cvae, replace(spec, precision="fp32"))
    return textbook_baseline_step(baseline, lr), svi.step, cvae


def benchmark(
    spec: RunSpec | None = None,
    *,
    num_batches: int = 50,
    batch_size: int = 128,
    paths: Sequence[str] = PATHS,
) -> dict:
    """Time the default baseline and CVAE training steps of each path in ``paths``.

    ``spec`` says the setting, seed, data, device and precision (default: 1 quadrant);
    its precision applies to the book's path (``pyro``) only. Returns seconds for one
    epoch of 60,000 images, extrapolated from ``num_batches`` timed batches with data
    handling included: ``{path}_baseline_epoch_s`` and ``{path}_cvae_epoch_s`` per
    path, and for the in-memory paths ``load_and_mask_s`` (reading and masking the
    images, once per process) and ``y_hat_precompute_s`` (the baseline's 60k guesses).
    """
    unknown = set(paths) - set(PATHS)
    if unknown:
        raise ValueError(f"Unknown paths {sorted(unknown)}; choose from {PATHS}.")
    spec = spec or RunSpec.create(1, "full")
    result: dict = {
        "batch_size": batch_size,
        "num_batches": num_batches,
        "num_quadrant_inputs": spec.num_quadrant_inputs,
        "device": str(spec.device),
        "device_description": describe_device(spec.device),
        "precision": spec.precision,
        "threads": torch.get_num_threads(),
        "paths": list(paths),
    }
    split = None
    for path in paths:
        if path == "pyro_example":
            result.update(_time_pyro_example(spec, num_batches, batch_size))
            continue
        if split is None:
            started = time.perf_counter()
            split = load_splits(spec.num_quadrant_inputs, spec.data_dir).train
            split = split.to(spec.device)
            result["load_and_mask_s"] = round(time.perf_counter() - started, 3)
        result.update(_time_in_memory(spec, path, split, num_batches, batch_size))
    return result


def _time_in_memory(
    spec: RunSpec, path: str, split, num_batches: int, batch_size: int
) -> dict:
    """Seconds per epoch of ``path``'s steps on in-memory batches of ``split``."""
    baseline_step, cvae_step, cvae = _steps(spec, path)
    loader = TensorBatches(
        split.inputs, split.targets, batch_size=batch_size, seed=spec.seed
    )
    baseline_s = _time_steps(_endless(loader), baseline_step, num_batches, spec.device)
    started = time.perf_counter()
    y_hat = batched(cvae.baseline_guess, split.inputs)
    _synchronize(spec.device)
    y_hat_s = (time.perf_counter() - started) * NUM_TRAIN_VAL / len(split)
    loader = TensorBatches(
        split.inputs, split.targets, y_hat, batch_size=batch_size, seed=spec.seed
    )
    cvae_s = _time_steps(_endless(loader), cvae_step, num_batches, spec.device)
    batches_per_epoch = NUM_TRAIN_VAL / batch_size
    return {
        "y_hat_precompute_s": round(y_hat_s, 3),
        f"{path}_baseline_epoch_s": round(baseline_s * batches_per_epoch, 2),
        f"{path}_cvae_epoch_s": round(cvae_s * batches_per_epoch, 2),
    }


def _time_pyro_example(spec: RunSpec, num_batches: int, batch_size: int) -> dict:
    """Seconds per epoch of the Pyro example's per-item pipeline, with Pyro's
    ``SVI``."""
    # the same clear errors as the in-memory path if files are missing
    load_mnist(spec.data_dir, train=True)
    dataset = PyroExampleMNIST(spec.data_dir, spec.num_quadrant_inputs)
    baseline_step, cvae_step, _ = _steps(spec, "pyro_example")
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=0,
        generator=torch.Generator().manual_seed(spec.seed),
    )
    result = {}
    for model, step in (("baseline", baseline_step), ("cvae", cvae_step)):
        batches = (
            (batch["input"].to(spec.device), batch["output"].to(spec.device))
            for batch in _endless(loader)
        )
        seconds = _time_steps(batches, step, num_batches, spec.device)
        result[f"pyro_example_{model}_epoch_s"] = round(
            seconds * NUM_TRAIN_VAL / batch_size, 2
        )
    return result


# The steps :func:`profile_cvae_step` profiles, as its table names them.
PROFILED = {
    "svi": "Pyro `SVI` (per-parameter `Adam`)",
    "pyro": "`Trace_ELBO` + one fused Adam (the book's)",
}
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


def _in_optimizer(event) -> bool:
    """Whether a profiled op ran inside an optimizer's ``step`` (torch names that range
    ``Optimizer.step#Adam.step``)."""
    while event is not None:
        if event.name.startswith("Optimizer.step"):
            return True
        event = event.cpu_parent
    return False


def profile_cvae_step(
    num_steps: int = 30,
    warmup: int = 5,
    batch_size: int = 128,
    num_quadrant_inputs: int = 1,
    data_dir=None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Milliseconds per CVAE training step on the CPU, split into parts, for
    :data:`PROFILED`'s textbook step (``"svi"``) and the book's (``"pyro"``).

    ``torch.profiler`` adds up the self time of the ATen ops: matmuls (forward and
    backward), the optimizer, and every other tensor op. The rest of the step's wall
    time is Python and framework (Pyro's tracing, autograd's bookkeeping, the loop).
    ``"total"`` is the wall time per step under the profiler.
    """
    from torch.profiler import ProfilerActivity, profile

    count = (num_steps + warmup) * batch_size
    split = load_splits(num_quadrant_inputs, data_dir, train_size=count).train
    # the profiler's first session pays its start-up; not a step's
    with profile(activities=[ProfilerActivity.CPU]):
        torch.ones(1).add_(1)
    report = {}
    spec = RunSpec.create(
        num_quadrant_inputs,
        "full",
        seed=seed,
        data_dir=data_dir,
        device="cpu",
        precision="fp32",
    )
    for path in PROFILED:
        _, cvae_step, cvae = _steps(spec, path)
        y_hat = batched(cvae.baseline_guess, split.inputs)
        loader = TensorBatches(
            split.inputs, split.targets, y_hat, batch_size=batch_size, seed=seed
        )
        batches = _endless(loader)
        for _ in range(warmup):
            cvae_step(*next(batches))
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            started = time.perf_counter()
            for _ in range(num_steps):
                cvae_step(*next(batches))
            wall_ms = (time.perf_counter() - started) * 1e3 / num_steps
        parts = dict.fromkeys(STEP_PARTS, 0.0)
        for event in profiler.events():
            part = _step_part(event.name)
            if part is not None and _in_optimizer(event):
                part = "optimizer"  # pyro.optim's Adam runs plain tensor ops, one per parameter
            if part is not None:
                parts[part] += event.self_cpu_time_total / 1e3 / num_steps
        parts["Python and framework"] = wall_ms - sum(parts.values())
        report[path] = {
            **{k: round(v, 3) for k, v in parts.items()},
            "total": round(wall_ms, 3),
        }
    return report


def profile_table(report: dict[str, dict[str, float]]) -> str:
    """Markdown: milliseconds per step and share of the step, per part, for the
    textbook step and the book's."""
    steps = [(path, PROFILED[path]) for path in PROFILED if path in report]
    rows = [
        [
            part,
            *(
                f"{report[key][part]:.2f} ({report[key][part] / report[key]['total']:.0%})"
                for key, _ in steps
            ),
        ]
        for part in STEP_PARTS
    ]
    rows.append(["total", *(f"{report[key]['total']:.2f}" for key, _ in steps)])
    return markdown_table(
        ["ms per CVAE step (batch 128)", *(label for _, label in steps)], rows
    )


PATH_LABELS = {
    "pyro": "`Trace_ELBO` + one fused Adam, in-memory batches (the book's)",
    "svi": "Pyro `SVI`, in-memory batches",
    "pyro_example": "`Trace_ELBO`, per-item `DataLoader` (the Pyro example)",
}


def bench_table(bench: dict) -> str:
    """Markdown: seconds per 60k-image epoch of each path, and the Pyro example's
    pipeline's time divided by each (how many times faster than it)."""
    rows = []
    for path in bench["paths"]:
        base, cvae = bench[f"{path}_baseline_epoch_s"], bench[f"{path}_cvae_epoch_s"]
        row = [PATH_LABELS[path], f"{base:.1f}", f"{cvae:.1f}"]
        if "pyro_example" in bench["paths"]:
            ratio = bench["pyro_example_cvae_epoch_s"] / cvae
            row.append("–" if path == "pyro_example" else f"{ratio:.1f}×")
        rows.append(row)
    header = ["seconds per 60k-image epoch", "baseline", "CVAE"]
    if "pyro_example" in bench["paths"]:
        header.append("CVAE: Pyro example ÷ this")
    return markdown_table(header, rows)


def speed_table(columns: dict[str, dict], path: str = "pyro") -> str:
    """Markdown: seconds per 60k-image epoch of ``path`` and, where it was measured, of
    the Pyro example's pipeline, one column per ``bench`` result
    (``{column name: result}``)."""
    rows = []
    for source in (path, "pyro_example"):
        for model, label in (("baseline", "baseline"), ("cvae", "CVAE")):
            key = f"{source}_{model}_epoch_s"
            if any(key in bench for bench in columns.values()):
                cells = [
                    f"{bench[key]:.2f}" if key in bench else "–"
                    for bench in columns.values()
                ]
                rows.append([f"{label}: {PATH_LABELS[source]}", *cells])
    return markdown_table(["seconds per 60k-image epoch", *columns], rows)
