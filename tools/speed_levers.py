"""The levers tried for a faster CVAE step, each timed in one process: ``levers.json``.

Usage (from the repository root, on an otherwise idle machine)::

    python -m tools.speed_levers [--batches 100] [--output
    results/reference/levers.json]

Seconds per 60k-image epoch (batch 128, 1 quadrant, fp32 unless named) for: Pyro's
``Trace_ELBO``; ``TraceMeanField_ELBO`` (analytic KL); the hand-written
``CVAE.neg_elbo`` on all 784 pixels and on the hidden ones only (what training uses);
that loss under ``torch.compile``; one thread instead of two; bf16 autocast; and, as the
floor, the step's matrix products alone. Each is the median of three timed runs, taken
in turn so that a slow spell of the machine hits all of them; ``torch.compile`` comes
last, since its worker processes stay alive in the process once it has compiled.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from cvae_helpers import fast
from cvae_helpers.config import library_versions, set_seed
from cvae_helpers.data import (
    NUM_TRAIN_VAL,
    TensorBatches,
    batched,
    hidden_pixels,
    load_splits,
)
from cvae_helpers.models import CVAE, BaselineNet

ROOT = Path(__file__).resolve().parent.parent
BATCH = 128


def _seconds_per_epoch(step, num_batches: int) -> float:
    """Seconds per 60k-image epoch of ``step()`` (one batch of 128), after five warm-up
    steps."""
    for _ in range(5):
        step()
    started = time.perf_counter()
    for _ in range(num_batches):
        step()
    return (time.perf_counter() - started) / num_batches * NUM_TRAIN_VAL / BATCH


def _epoch_seconds(
    loss_fn, cvae, split, y_hat, num_batches: int, autocast=None
) -> float:
    """The fast engine's step (fused Adam, ``autocast``) around
    ``loss_fn(xs, ys, y_hat)``."""
    params = [p for n, p in cvae.named_parameters() if not n.startswith("baseline.")]
    steps = fast.FastSteps(loss_fn, params, 1e-3, autocast)
    loader = iter(
        TensorBatches(split.inputs, split.targets, y_hat, batch_size=BATCH, seed=0)
    )

    def step():
        steps.step(*next(loader))

    return _seconds_per_epoch(step, num_batches)


def _matmul_seconds(cvae: CVAE, num_hidden_pixels: int, num_batches: int) -> float:
    """The matrix products of a training step alone, replayed without autograd: the
    floor.

    Per linear layer ``(in, out)``: the forward ``X Wᵀ + b``, the weight gradient
    ``dYᵀ X`` and, except where the input is data (the encoders' first layers), the
    input gradient ``dY W``. The generation network's last layer has only the hidden
    pixels' rows, as in training.
    """
    layers = []
    for net in (cvae.recognition_net, cvae.prior_net):
        layers += [(net.fc1, False), (net.fc2, True), (net.head, True)]
    gen = cvae.generation_net
    layers += [(gen.fc1, True), (gen.fc2, True), (gen.fc3, True)]
    shapes = [
        (layer.in_features, layer.out_features, needs_input_grad)
        for layer, needs_input_grad in layers
    ]
    shapes[-1] = (shapes[-1][0], num_hidden_pixels, True)
    tensors = [
        (
            torch.randn(BATCH, i),
            torch.randn(o, i),
            torch.randn(o),
            torch.randn(BATCH, o),
            g,
        )
        for i, o, g in shapes
    ]

    def step():
        for x, w, b, dy, needs_input_grad in tensors:
            torch.addmm(b, x, w.t())
            dy.t().mm(x)
            if needs_input_grad:
                dy.mm(w)

    return _seconds_per_epoch(step, num_batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument(
        "--output", type=Path, default=ROOT / "results" / "reference" / "levers.json"
    )
    args = parser.parse_args()
    split = load_splits(1, train_size=BATCH * (3 * args.batches + 20)).train
    set_seed(0)
    cvae = CVAE(baseline=BaselineNet())
    y_hat = batched(cvae.baseline_guess, split.inputs)
    pixels = hidden_pixels(split.inputs)
    levers = {
        "Pyro Trace_ELBO": lambda x, y, h: Trace_ELBO().differentiable_loss(
            cvae.model, cvae.guide, x, y, h
        ),
        "Pyro TraceMeanField_ELBO (analytic KL)": lambda x, y, h: (
            TraceMeanField_ELBO().differentiable_loss(cvae.model, cvae.guide, x, y, h)
        ),
        "neg_elbo, all 784 pixels": lambda x, y, h: fast.neg_elbo(cvae, x, y, h),
        "neg_elbo, hidden pixels (training's loss)": lambda x, y, h: fast.neg_elbo(
            cvae, x, y, h, pixels
        ),
    }
    floor = "matrix products alone (the floor: no autograd, no elementwise work, no optimizer)"
    runs: dict[str, list[float]] = {
        name: []
        for name in [
            *levers,
            "training's loss, 1 thread",
            "training's loss, bf16 autocast",
            floor,
        ]
    }
    threads = torch.get_num_threads()
    training_loss = levers["neg_elbo, hidden pixels (training's loss)"]
    for _ in range(3):
        for name, loss_fn in levers.items():
            runs[name].append(_epoch_seconds(loss_fn, cvae, split, y_hat, args.batches))
        torch.set_num_threads(1)
        runs["training's loss, 1 thread"].append(
            _epoch_seconds(training_loss, cvae, split, y_hat, args.batches)
        )
        torch.set_num_threads(threads)
        runs["training's loss, bf16 autocast"].append(
            _epoch_seconds(
                training_loss, cvae, split, y_hat, args.batches, torch.bfloat16
            )
        )
        runs[floor].append(_matmul_seconds(cvae, len(pixels), args.batches))
    # Last: once torch.compile has run, its worker processes and hooks stay in this
    # process.
    compiled = torch.compile(
        lambda x, y, h, p: fast.neg_elbo(cvae, x, y, h, p), dynamic=False
    )
    name = "neg_elbo, hidden pixels, torch.compile"
    _epoch_seconds(
        lambda x, y, h: compiled(x, y, h, pixels), cvae, split, y_hat, 3
    )  # compiles
    runs[name] = [
        _epoch_seconds(
            lambda x, y, h: compiled(x, y, h, pixels), cvae, split, y_hat, args.batches
        )
        for _ in range(3)
    ]
    report = {
        "unit": "seconds per 60k-image CVAE epoch (median of 3)",
        "threads": threads,
        "batches": args.batches,
        "versions": library_versions(),
        "levers": {
            name: round(statistics.median(times), 2) for name, times in runs.items()
        },
    }
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["levers"], indent=1))


if __name__ == "__main__":
    main()
