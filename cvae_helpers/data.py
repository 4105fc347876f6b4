"""MNIST loading, quadrant masking, train/validation/test splits and in-memory batches.

An image is masked once when its split is built, and a batch is one indexing call, so
the training loop does no per-item Python work.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import torch
from torchvision.datasets import MNIST
from torchvision.datasets.utils import check_integrity

from .config import DATA_DIR_ENV, check_num_quadrant_inputs, default_data_dir

IMAGE_SIZE = 28
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
HALF = IMAGE_SIZE // 2
MASK_VALUE = -1.0
NUM_TRAIN_VAL = 60_000
DEFAULT_VAL_SIZE = 10_000
SPLIT_SEED = 0
# Batch size of every computation without gradients (validation, y_hat, evaluation):
# with S = 100 samples per image, each (S, batch, 784) tensor stays near 60 MB.
EVAL_BATCH_SIZE = 200

# The compressed files torchvision checks, with the MD5s it checks them against.
MNIST_MD5 = dict(MNIST.resources)


class MNISTDataError(RuntimeError):
    """MNIST is missing or corrupt; the message says what to do."""


def _check_archives(raw: Path) -> None:
    """Fail on a corrupt archive (torchvision would silently download it again)."""
    for name, expected in MNIST_MD5.items():
        path = raw / name
        if path.is_file() and not check_integrity(path, expected):
            raise MNISTDataError(
                f"{path} is corrupt: its MD5 is not the {expected} torchvision expects. "
                f"Delete it (and its unpacked twin {path.with_suffix('')}) and run again to "
                "download a fresh copy, or copy a good one into place."
            )


@functools.lru_cache(maxsize=4)
def _load_cached(
    root: str, train: bool, download: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    root_path = Path(root)
    _check_archives(root_path / "MNIST" / "raw")
    try:
        dataset = MNIST(root_path, train=train, download=download)
    except (RuntimeError, URLError, OSError) as error:
        reason = "download failed" if download else "files not found and download=False"
        raise MNISTDataError(
            f"MNIST could not be loaded from data root {root_path} ({reason}).\n"
            f"Expected layout: {root_path}/MNIST/raw/*.gz, i.e. train-images-idx3-ubyte.gz, "
            "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz.\n"
            f"Either let torchvision download them (needs internet), or put the four files there and "
            f"point the data root at them: pass root=... or set the {DATA_DIR_ENV} environment variable."
        ) from error
    except ValueError as error:  # a truncated or garbled IDX file
        raise MNISTDataError(
            f"An MNIST file under {root_path}/MNIST/raw is unreadable ({error}); delete the unpacked "
            "files (without .gz) so that they are unpacked again from the archives."
        ) from error
    images = dataset.data.to(torch.float32).div_(255.0)
    return images, dataset.targets.clone()


def load_mnist(
    root: str | Path | None = None, train: bool = True, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 60k training images (``train``) or the 10k test images, through
    torchvision: ``images`` ``(N, 28, 28)`` float32 in ``[0, 1]`` and ``labels``
    ``(N,)``, cached per process (clone before changing them in place). ``root``
    defaults to :func:`~cvae_helpers.config.default_data_dir`; missing or corrupt
    files raise :class:`MNISTDataError`."""
    root = Path(root).expanduser() if root is not None else default_data_dir()
    return _load_cached(str(root.resolve()), bool(train), bool(download))


def given_quadrants_mask(num_quadrant_inputs: int) -> torch.Tensor:
    """Boolean mask of shape ``(28, 28)``, True on the pixels given as input.

    1 = bottom-left quadrant; 2 = left half; 3 = everything but the bottom-right
    quadrant.
    """
    check_num_quadrant_inputs(num_quadrant_inputs)
    given = torch.zeros(IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool)
    given[HALF:, :HALF] = True  # bottom-left, given in every setting
    if num_quadrant_inputs >= 2:
        given[:HALF, :HALF] = True  # top-left
    if num_quadrant_inputs == 3:
        given[:HALF, HALF:] = True  # top-right
    return given


def quadrant_label(num_quadrant_inputs: int) -> str:
    """``"1 quadrant"``, ``"2 quadrants"``...: how tables and titles name a setting."""
    return f"{num_quadrant_inputs} quadrant{'s' * (num_quadrant_inputs != 1)}"


def mask_quadrants(
    images: torch.Tensor,
    num_quadrant_inputs: int,
    mask_value: float = MASK_VALUE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split images ``(N, 28, 28)`` or ``(N, 1, 28, 28)``, values in [0, 1],
    into ``inputs`` (the given quadrants, ``mask_value`` elsewhere) and
    ``targets`` (the pixels to predict, ``mask_value`` on the given quadrants),
    both ``(N, 28, 28)``."""
    given = given_quadrants_mask(num_quadrant_inputs)
    if not isinstance(images, torch.Tensor):
        kind = type(images).__name__
        raise ValueError(f"images must be a torch.Tensor, got {kind}.")
    if images.dim() == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.dim() != 3 or tuple(images.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            "images must have shape (N, 28, 28) or (N, 1, 28, 28), "
            f"got {tuple(images.shape)}."
        )
    if not images.is_floating_point():
        raise ValueError(
            "images must be floating point in [0, 1], "
            f"got dtype {images.dtype}; divide uint8 pixels by 255 first."
        )
    if images.numel() and (images.min() < 0 or images.max() > 1):
        low, high = images.min().item(), images.max().item()
        raise ValueError(
            f"image values must lie in [0, 1], got [{low:.3g}, {high:.3g}]."
        )
    given = given.to(images.device)
    fill = torch.tensor(mask_value, dtype=images.dtype, device=images.device)
    return torch.where(given, images, fill), torch.where(given, fill, images)


@dataclass
class MaskedSplit:
    """One split, masked once: ``inputs``, ``targets`` ``(N, 28, 28)``, ``labels``."""

    inputs: torch.Tensor
    targets: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @property
    def images(self) -> torch.Tensor:
        """The original images ``(N, 28, 28)``, put back together."""
        return torch.where(self.inputs == MASK_VALUE, self.targets, self.inputs)

    def take(self, index: torch.Tensor | slice) -> MaskedSplit:
        """The items at ``index`` (a slice gives views, an index tensor copies)."""
        return MaskedSplit(self.inputs[index], self.targets[index], self.labels[index])

    def to(self, device: torch.device | str) -> MaskedSplit:
        return MaskedSplit(
            self.inputs.to(device), self.targets.to(device), self.labels.to(device)
        )


@dataclass
class QuadrantSplits:
    """Train, validation and test splits for one number of given quadrants."""

    num_quadrant_inputs: int
    train: MaskedSplit
    val: MaskedSplit
    test: MaskedSplit

    def to(self, device: torch.device | str) -> QuadrantSplits:
        return QuadrantSplits(
            self.num_quadrant_inputs,
            self.train.to(device),
            self.val.to(device),
            self.test.to(device),
        )


def split_indices(
    num_items: int = NUM_TRAIN_VAL,
    val_size: int = DEFAULT_VAL_SIZE,
    seed: int = SPLIT_SEED,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint train and validation indices: a seeded permutation of ``num_items``."""
    if not 0 < val_size < num_items:
        raise ValueError(
            f"val_size must lie strictly between 0 and {num_items}, got {val_size}."
        )
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))
    return order[val_size:], order[:val_size]


def load_splits(
    num_quadrant_inputs: int,
    root: str | Path | None = None,
    *,
    val_size: int = DEFAULT_VAL_SIZE,
    split_seed: int = SPLIT_SEED,
    train_size: int | None = None,
    val_subset: int | None = None,
    test_size: int | None = None,
    download: bool = True,
) -> QuadrantSplits:
    """Masked train/validation/test splits. The validation split is carved from the
    60k training images (50k/10k, fixed by ``split_seed``): early stopping never sees
    the test set. ``train_size``, ``val_subset``, ``test_size``: keep the first ones."""
    train_images, train_labels = load_mnist(root, train=True, download=download)
    test_images, test_labels = load_mnist(root, train=False, download=download)
    train_idx, val_idx = split_indices(train_images.shape[0], val_size, split_seed)
    train_idx, val_idx = train_idx[:train_size], val_idx[:val_subset]
    test_images, test_labels = test_images[:test_size], test_labels[:test_size]

    def build(images: torch.Tensor, labels: torch.Tensor) -> MaskedSplit:
        inputs, targets = mask_quadrants(images, num_quadrant_inputs)
        return MaskedSplit(inputs, targets, labels)

    return QuadrantSplits(
        num_quadrant_inputs,
        train=build(train_images[train_idx], train_labels[train_idx]),
        val=build(train_images[val_idx], train_labels[val_idx]),
        test=build(test_images, test_labels),
    )


class TensorBatches:
    """Seeded mini-batches over tensors that share their first dimension: each pass
    draws a permutation from the batches' own generator, never from global random
    state. ``for inputs, targets in TensorBatches(split.inputs, split.targets)``."""

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int = 128,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        if not tensors or any(t.shape[0] != tensors[0].shape[0] for t in tensors):
            raise ValueError(
                "TensorBatches needs tensors with the same number of items."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.position = 0  # the batch handed out in a pass (0 between passes)

    def __len__(self) -> int:
        return -(-self.num_items // self.batch_size)

    @property
    def num_items(self) -> int:
        return self.tensors[0].shape[0]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n, device = self.num_items, self.tensors[0].device
        order = None
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(device)
        for position, start in enumerate(range(0, n, self.batch_size), 1):
            self.position = position
            if order is None:
                yield tuple(t[start : start + self.batch_size] for t in self.tensors)
            else:
                index = order[start : start + self.batch_size]
                yield tuple(t[index] for t in self.tensors)
        self.position = 0  # the pass ran to its end


@torch.no_grad()
def batched(
    fn: Callable[..., torch.Tensor],
    *tensors: torch.Tensor,
    batch_size: int = EVAL_BATCH_SIZE,
) -> torch.Tensor:
    """``fn`` over aligned tensors in batches, without gradients, outputs concatenated:
    ``batched(baseline, split.inputs)`` is ``(N, 784)``."""
    n = tensors[0].shape[0]
    return torch.cat(
        [fn(*(t[i : i + batch_size] for t in tensors)) for i in range(0, n, batch_size)]
    )
