"""The levers around the CVAE's training step, each alone and all together, timed in one
process: ``levers.json``.

Usage (from the repository root, on an otherwise idle machine)::

    python -m tools.speed_levers [--batches 60] [--device cpu|cuda]
        [--output results/reference/levers.json]

Seconds per 60k-image CVAE epoch (batch 128, 1 quadrant, in-memory batches). The start
is the textbook step, Pyro's ``SVI`` with its per-parameter ``Adam`` and the loss read
back every step; each lever is then added alone: Pyro's validation off, Pyro's loss
with one (unfused) torch Adam, one fused Adam, the loss kept on the device, bf16
autocast, one thread instead of all; "book" is the step the book trains with
(:func:`cvae_helpers.training.make_steps`: the levers that pay, together), and
"book + bf16" adds autocast. ``JitTrace_ELBO`` and ``torch.compile`` of the three
networks are tried last (a compiled module keeps its hooks in the process); a lever
that fails records its error. Each time is the median of three runs taken in turn, so
that a slow spell of the machine hits all of them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
from pyro.optim import Adam

from cvae_helpers.config import (
    RunSpec,
    bf16_supported,
    describe_device,
    library_versions,
    set_seed,
)
from cvae_helpers.data import NUM_TRAIN_VAL, TensorBatches, batched, load_splits
from cvae_helpers.models import CVAE, BaselineNet
from cvae_helpers.training import TrainingSteps, make_steps, trained_parameters

ROOT = Path(__file__).resolve().parent.parent
BATCH = 128
BOOK = "book: one fused Adam, loss on the device"


def _seconds_per_epoch(step: Callable, batches, num_batches: int, device) -> float:
    """Seconds per 60k-image epoch of ``step(*batch)``, after five warm-up steps."""
    for _ in range(5):
        step(*next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(num_batches):
        step(*next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / num_batches * NUM_TRAIN_VAL / BATCH


def _read_back(step: Callable) -> Callable:
    """``step`` with its loss read back as a Python number every step, as
    ``svi.step`` does."""
    return lambda *batch: float(step(*batch))


def _svi(cvae: CVAE, validate: bool = True, loss=None) -> Callable:
    pyro.clear_param_store()
    svi = SVI(cvae.model, cvae.guide, Adam({"lr": 1e-3}), loss or Trace_ELBO())

    def step(*batch):
        with pyro.validation_enabled(validate):
            return svi.step(*batch)

    return step


def _steps(cvae: CVAE, spec: RunSpec, fused: bool = True) -> TrainingSteps:
    """The book's steps; ``fused=False``: one torch Adam that runs a kernel per
    tensor."""
    pyro.clear_param_store()
    steps = make_steps(cvae, spec)
    if not fused:
        steps.optimizer = torch.optim.Adam(
            trained_parameters(cvae), lr=1e-3, fused=False, foreach=True
        )
    return steps


def _compiled(cvae: CVAE, spec: RunSpec) -> Callable:
    for net in (cvae.prior_net, cvae.recognition_net, cvae.generation_net):
        net.compile(dynamic=False)
    return _steps(cvae, spec).step


def levers(spec: RunSpec) -> dict[str, Callable[[CVAE], Callable]]:
    """Each lever as ``make(cvae) -> step(*batch)``."""
    table = {
        "Pyro SVI (the textbook step)": lambda cvae: _svi(cvae),
        "SVI, Pyro's validation off": lambda cvae: _svi(cvae, validate=False),
        "Trace_ELBO + one torch Adam (per tensor), loss read every step": lambda cvae: (
            _read_back(_steps(cvae, spec, fused=False).step)
        ),
        "Trace_ELBO + one fused Adam, loss read every step": lambda cvae: _read_back(
            _steps(cvae, spec).step
        ),
        "Trace_ELBO + one torch Adam (per tensor), loss on the device": lambda cvae: (
            _steps(cvae, spec, fused=False).step
        ),
        BOOK: lambda cvae: _steps(cvae, spec).step,
    }
    if spec.device.type == "cuda" or bf16_supported(spec.device):
        table["book + bf16 autocast"] = lambda cvae: _autocast(_steps(cvae, spec))
    return table


def _autocast(steps: TrainingSteps) -> Callable:
    steps.autocast = torch.bfloat16
    return steps.step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "results" / "reference" / "levers.json"
    )
    args = parser.parse_args()
    spec = RunSpec.create(1, "full", device=args.device, precision="fp32")
    split = load_splits(1, spec.data_dir, train_size=BATCH * 40).train.to(spec.device)
    set_seed(0)
    cvae = CVAE(baseline=BaselineNet()).to(spec.device)
    y_hat = batched(cvae.baseline_guess, split.inputs)
    loader = TensorBatches(split.inputs, split.targets, y_hat, batch_size=BATCH)

    def batches():
        while True:
            yield from loader

    def time_lever(make: Callable, runs: int = 3) -> list[float]:
        set_seed(0)
        model = CVAE(baseline=BaselineNet()).to(spec.device)
        step = make(model)
        return [
            _seconds_per_epoch(step, batches(), args.batches, spec.device)
            for _ in range(runs)
        ]

    threads = torch.get_num_threads()
    table = levers(spec)
    times: dict[str, list[float]] = {name: [] for name in table}
    one_thread = "book, 1 thread" if spec.device.type == "cpu" else None
    if one_thread:
        times[one_thread] = []
    for _ in range(3):  # in turn: a slow spell hits every lever
        for name, make in table.items():
            times[name] += time_lever(make, runs=1)
        if one_thread:
            torch.set_num_threads(1)
            times[one_thread] += time_lever(table[BOOK], runs=1)
            torch.set_num_threads(threads)
    report = {
        name: round(statistics.median(values), 2) for name, values in times.items()
    }
    failed = {}
    for name, make in (
        ("JitTrace_ELBO with SVI", lambda cvae: _svi(cvae, loss=JitTrace_ELBO())),
        ("book, the three networks under torch.compile", lambda cvae: _compiled(cvae, spec)),
    ):  # fmt: skip
        try:
            report[name] = round(statistics.median(time_lever(make)), 2)
        except Exception as error:  # a lever that does not run says why
            failed[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    result = {
        "unit": "seconds per 60k-image CVAE epoch (median of 3, 1 quadrant, batch 128)",
        "device": describe_device(spec.device),
        "threads": threads,
        "batches": args.batches,
        "versions": library_versions(),
        "levers": report,
        "failed": failed,
    }
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
