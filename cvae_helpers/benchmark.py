"""Seconds per 60k-image training epoch, extrapolated from timed batches (``python -m cvae_helpers bench``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import torch
from pyro.infer import Trace_ELBO

from .config import set_seed
from .data import NUM_TRAIN_VAL, TensorBatches, load_splits
from .models import CVAE, BaselineNet, masked_bce
from .training import batched, make_adam


def _time_steps(batches: Iterator, step: Callable, num_batches: int, warmup: int) -> float:
    """Seconds per batch, data handling included, after ``warmup`` untimed batches."""
    for _ in range(warmup):
        step(*next(batches))
    started = time.perf_counter()
    for _ in range(num_batches):
        step(*next(batches))
    return (time.perf_counter() - started) / num_batches


def _endless(loader: TensorBatches) -> Iterator:
    while True:
        yield from loader


def benchmark(num_quadrant_inputs: int = 1, num_batches: int = 50, batch_size: int = 128,
              warmup: int = 5, data_dir=None, seed: int = 0) -> dict:
    """Time the default baseline and CVAE training steps on the CPU or current default device.

    Returns ``baseline_epoch_s`` and ``cvae_epoch_s``: seconds for one epoch of 60,000 images
    (the whole MNIST training set), extrapolated from ``num_batches`` timed batches, batching
    included; ``y_hat_precompute_s``: the one-off cost of the frozen baseline's guesses for 60k
    images, paid once per dataset rather than per epoch.
    """
    set_seed(seed)
    split = load_splits(num_quadrant_inputs, data_dir).train
    batches_per_epoch = NUM_TRAIN_VAL / batch_size

    baseline = BaselineNet()
    optimizer = make_adam(baseline.parameters(), 1e-3)

    def baseline_step(inputs, targets):
        loss = masked_bce(baseline.logits(inputs), targets).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    loader = TensorBatches(split.inputs, split.targets, batch_size=batch_size, seed=seed)
    baseline_s = _time_steps(_endless(loader), baseline_step, num_batches, warmup)

    cvae = CVAE(baseline=baseline)
    started = time.perf_counter()
    y_hat = batched(cvae.baseline_guess, split.inputs)
    y_hat_s = (time.perf_counter() - started) * NUM_TRAIN_VAL / len(split)
    elbo = Trace_ELBO()
    optimizer = make_adam([p for n, p in cvae.named_parameters()
                           if not n.startswith("baseline.")], 1e-3)

    def cvae_step(inputs, targets, y_hat_batch):
        loss = elbo.differentiable_loss(cvae.model, cvae.guide, inputs, targets, y_hat_batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    loader = TensorBatches(split.inputs, split.targets, y_hat, batch_size=batch_size, seed=seed)
    cvae_s = _time_steps(_endless(loader), cvae_step, num_batches, warmup)
    return {
        "baseline_epoch_s": round(baseline_s * batches_per_epoch, 2),
        "cvae_epoch_s": round(cvae_s * batches_per_epoch, 2),
        "y_hat_precompute_s": round(y_hat_s, 3),
        "batch_size": batch_size,
        "num_batches": num_batches,
        "num_quadrant_inputs": num_quadrant_inputs,
        "threads": torch.get_num_threads(),
    }
