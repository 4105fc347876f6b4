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
from pathlib import Path

import torch
from pyro.infer import Trace_ELBO
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import MNIST
from torchvision.transforms import functional as TF

from .config import default_data_dir, set_seed
from .data import NUM_TRAIN_VAL, TensorBatches, batched, load_mnist, load_splits, mask_quadrants
from .models import CVAE, BaselineNet, masked_bce
from .results import markdown_table
from .training import make_adam

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


def _time_steps(batches: Iterator, step: Callable, num_batches: int, warmup: int) -> float:
    """Seconds per batch, data handling included, after ``warmup`` untimed batches."""
    for _ in range(warmup):
        step(*next(batches))
    started = time.perf_counter()
    for _ in range(num_batches):
        step(*next(batches))
    return (time.perf_counter() - started) / num_batches


def _endless(loader) -> Iterator:
    while True:
        yield from loader


def _pyro_example_batches(loader: DataLoader) -> Iterator:
    for batch in _endless(loader):
        yield batch["input"], batch["output"]


def _steps(seed: int) -> tuple[Callable, Callable, CVAE]:
    """Fresh default networks, seeded: the baseline's step, the CVAE's step and the CVAE."""
    set_seed(seed)
    baseline = BaselineNet()
    baseline_opt = make_adam(baseline.parameters(), 1e-3)
    cvae = CVAE(baseline=BaselineNet())
    cvae_opt = make_adam([p for n, p in cvae.named_parameters()
                          if not n.startswith("baseline.")], 1e-3)
    elbo = Trace_ELBO()

    def baseline_step(inputs, targets):
        loss = masked_bce(baseline.logits(inputs), targets).sum()
        baseline_opt.zero_grad(set_to_none=True)
        loss.backward()
        baseline_opt.step()

    def cvae_step(inputs, targets, y_hat=None):  # y_hat None: the baseline runs in the model
        loss = elbo.differentiable_loss(cvae.model, cvae.guide, inputs, targets, y_hat)
        cvae_opt.zero_grad(set_to_none=True)
        loss.backward()
        cvae_opt.step()

    return baseline_step, cvae_step, cvae


def benchmark(num_quadrant_inputs: int = 1, num_batches: int = 50, batch_size: int = 128,
              warmup: int = 5, data_dir=None, seed: int = 0, pipeline: str = "memory") -> dict:
    """Time the default baseline and CVAE training steps on the CPU (or the default device).

    Returns seconds for one epoch of 60,000 images (the whole MNIST training set),
    extrapolated from ``num_batches`` timed batches with data handling included:
    ``baseline_epoch_s`` and ``cvae_epoch_s`` for the in-memory path (plus
    ``load_and_mask_s``, reading and masking all 70k images once per process, and
    ``y_hat_precompute_s``, the one-off cost of the baseline's guesses for 60k images), and with
    ``pipeline="pyro_example"`` or ``"both"`` the ``pyro_example_*`` figures of the per-item
    path and the ratios ``pyro_example / memory`` (``*_speedup``).
    """
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}.")
    batches_per_epoch = NUM_TRAIN_VAL / batch_size
    result: dict = {"batch_size": batch_size, "num_batches": num_batches,
                    "num_quadrant_inputs": num_quadrant_inputs,
                    "threads": torch.get_num_threads()}

    if pipeline in ("memory", "both"):
        started = time.perf_counter()
        split = load_splits(num_quadrant_inputs, data_dir).train  # all 70k images, masked
        result["load_and_mask_s"] = round(time.perf_counter() - started, 3)
        baseline_step, cvae_step, cvae = _steps(seed)
        loader = TensorBatches(split.inputs, split.targets, batch_size=batch_size, seed=seed)
        baseline_s = _time_steps(_endless(loader), baseline_step, num_batches, warmup)
        started = time.perf_counter()
        y_hat = batched(cvae.baseline_guess, split.inputs)
        y_hat_s = (time.perf_counter() - started) * NUM_TRAIN_VAL / len(split)
        loader = TensorBatches(split.inputs, split.targets, y_hat, batch_size=batch_size,
                               seed=seed)
        cvae_s = _time_steps(_endless(loader), cvae_step, num_batches, warmup)
        result.update(baseline_epoch_s=round(baseline_s * batches_per_epoch, 2),
                      cvae_epoch_s=round(cvae_s * batches_per_epoch, 2),
                      y_hat_precompute_s=round(y_hat_s, 3))

    if pipeline in ("pyro_example", "both"):
        root = Path(data_dir) if data_dir is not None else default_data_dir()
        load_mnist(root, train=True)  # the same clear errors as the main path if files are missing
        dataset = PyroExampleMNIST(root, num_quadrant_inputs)
        baseline_step, cvae_step, _ = _steps(seed)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0,
                            generator=torch.Generator().manual_seed(seed))
        for model, step in (("baseline", baseline_step), ("cvae", cvae_step)):
            seconds = _time_steps(_pyro_example_batches(loader), step, num_batches, warmup)
            result[f"pyro_example_{model}_epoch_s"] = round(seconds * batches_per_epoch, 2)

    if pipeline == "both":
        for model in ("baseline", "cvae"):
            result[f"{model}_speedup"] = round(
                result[f"pyro_example_{model}_epoch_s"] / result[f"{model}_epoch_s"], 2)
    return result


def bench_table(bench: dict) -> str:
    """Markdown: seconds per 60k-image epoch, in-memory against the Pyro example's pipeline."""
    rows = []
    for label, key in (("baseline", "baseline"), ("CVAE", "cvae")):
        memory, pyro_example = bench[f"{key}_epoch_s"], bench[f"pyro_example_{key}_epoch_s"]
        rows.append([label, f"{memory:.1f}", f"{pyro_example:.1f}", f"{pyro_example / memory:.1f}×"])
    return markdown_table(["seconds per 60k-image epoch", "in-memory (this book)",
                           "per-item DataLoader (Pyro example)", "ratio"], rows)
