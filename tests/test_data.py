from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pytest
import torch

from cvae_helpers import data
from cvae_helpers.data import (
    MASK_VALUE,
    MNISTDataError,
    TensorBatches,
    given_quadrants_mask,
    load_mnist,
    load_splits,
    mask_quadrants,
    split_indices,
)


def _quadrants(mask: torch.Tensor) -> dict[str, bool]:
    """Which quadrants are all True / all False (raises if a quadrant is mixed)."""
    out = {}
    for name, (rows, cols) in {
        "TL": (slice(0, 14), slice(0, 14)),
        "TR": (slice(0, 14), slice(14, 28)),
        "BL": (slice(14, 28), slice(0, 14)),
        "BR": (slice(14, 28), slice(14, 28)),
    }.items():
        block = mask[rows, cols]
        assert bool(block.all()) or not bool(block.any()), f"quadrant {name} is mixed"
        out[name] = bool(block.all())
    return out


@pytest.mark.parametrize(
    "q, given",
    [
        (1, {"TL": False, "TR": False, "BL": True, "BR": False}),
        (2, {"TL": True, "TR": False, "BL": True, "BR": False}),
        (3, {"TL": True, "TR": True, "BL": True, "BR": False}),
    ],
)
def test_given_pixel_sets_are_exact(q, given):
    mask = given_quadrants_mask(q)
    assert mask.shape == (28, 28) and mask.dtype == torch.bool
    assert _quadrants(mask) == given
    assert int(mask.sum()) == 196 * q


@pytest.mark.parametrize("q", [1, 2, 3])
def test_inputs_and_targets_are_complementary(q):
    images = torch.rand(5, 28, 28)
    inputs, targets = mask_quadrants(images, q)
    given = given_quadrants_mask(q)
    assert inputs.shape == targets.shape == (5, 28, 28)
    assert torch.equal(inputs[:, given], images[:, given])
    assert torch.equal(targets[:, ~given], images[:, ~given])
    assert (inputs[:, ~given] == MASK_VALUE).all() and (
        targets[:, given] == MASK_VALUE
    ).all()
    # exactly one of the two holds each pixel, so together they give the image back
    assert torch.equal(
        (inputs == MASK_VALUE) ^ (targets == MASK_VALUE),
        torch.ones(5, 28, 28, dtype=torch.bool),
    )
    assert torch.equal(torch.where(inputs == MASK_VALUE, targets, inputs), images)


def test_channel_dimension_and_custom_sentinel():
    images = torch.rand(3, 1, 28, 28)
    inputs, targets = mask_quadrants(images, 2, mask_value=-5.0)
    assert inputs.shape == (3, 28, 28)
    assert (inputs[:, :, 14:] == -5.0).all() and (targets[:, :, :14] == -5.0).all()


@pytest.mark.parametrize("q", [0, 4, -1, "2", 2.5, True, None])
def test_bad_quadrant_count(q):
    with pytest.raises(ValueError, match="must be 1, 2 or 3"):
        mask_quadrants(torch.rand(2, 28, 28), q)


@pytest.mark.parametrize(
    "shape", [(28, 28), (2, 28, 27), (2, 2, 28, 28), (2, 784), (2, 1, 1, 28, 28)]
)
def test_bad_shape(shape):
    with pytest.raises(ValueError, match="shape"):
        mask_quadrants(torch.rand(shape), 1)


@pytest.mark.parametrize("bad", [1.5, -0.1])
def test_values_outside_unit_interval(bad):
    images = torch.rand(2, 28, 28)
    images[1, 3, 4] = bad
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mask_quadrants(images, 3)


def test_integer_pixels_are_refused():
    with pytest.raises(ValueError, match="255"):
        mask_quadrants(torch.randint(0, 256, (2, 28, 28), dtype=torch.uint8), 1)


def test_splits_are_disjoint_complete_and_deterministic():
    train, val = split_indices(60_000, 10_000, seed=0)
    assert len(train) == 50_000 and len(val) == 10_000
    assert len(set(train.tolist()) | set(val.tolist())) == 60_000
    again_train, again_val = split_indices(60_000, 10_000, seed=0)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    assert not torch.equal(val, split_indices(60_000, 10_000, seed=1)[1])
    with pytest.raises(ValueError):
        split_indices(100, 100)


def test_batches_shapes_dtypes_and_coverage():
    inputs, targets = mask_quadrants(torch.rand(70, 28, 28), 2)
    labels = torch.arange(70)
    loader = TensorBatches(inputs, targets, labels, batch_size=32, seed=3)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert [b[0].shape for b in batches] == [(32, 28, 28), (32, 28, 28), (6, 28, 28)]
    assert all(
        b[0].dtype == torch.float32 and b[2].dtype == torch.int64 for b in batches
    )
    seen = torch.cat([b[2] for b in batches])
    assert sorted(seen.tolist()) == list(range(70))  # each item exactly once per pass
    # items stay aligned across tensors
    for x, _, idx in batches:
        assert torch.equal(x, inputs[idx])
    second = torch.cat([b[2] for b in loader])
    assert not torch.equal(seen, second)  # a new order each pass
    replay = TensorBatches(inputs, targets, labels, batch_size=32, seed=3)
    assert torch.equal(
        torch.cat([b[2] for b in replay]), seen
    )  # the seed fixes the order
    ordered = torch.cat(
        [b[0] for b in TensorBatches(labels, batch_size=32, shuffle=False)]
    )
    assert torch.equal(ordered, labels)


def test_batches_count_items_and_say_which_batch_is_out():
    """``num_items`` divides an epoch's summed loss; ``position`` (1-based) names the
    batch an error happened in, in either order."""
    labels = torch.arange(70)
    for shuffle in (True, False):
        loader = TensorBatches(labels, batch_size=32, shuffle=shuffle)
        assert loader.num_items == 70 and loader.position == 0
        positions = [loader.position for _ in loader]
        assert (
            positions == [1, 2, 3] and loader.position == 0
        )  # 0 again once a pass ends
        batches = iter(loader)
        next(batches)
        assert loader.position == 1  # a new pass counts from the start


def test_batches_reject_misaligned_tensors():
    with pytest.raises(ValueError):
        TensorBatches(torch.zeros(3), torch.zeros(4))


# --- real MNIST from the data root
# ------------------------------------------------------------


def test_load_mnist_from_data_root():
    images, labels = load_mnist(train=True)
    assert images.shape == (60_000, 28, 28) and images.dtype == torch.float32
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    assert abs(images.mean().item() - 0.1307) < 1e-3
    assert torch.bincount(labels).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    test_images, test_labels = load_mnist(train=False)
    assert test_images.shape == (10_000, 28, 28)
    assert torch.bincount(test_labels).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]


def test_load_splits_quick_mode():
    splits = load_splits(3, train_size=100, val_subset=50, test_size=20)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (100, 50, 20)
    for split in (splits.train, splits.val, splits.test):
        assert (split.inputs[:, 14:, 14:] == MASK_VALUE).all()
        assert (split.targets[:, :14] == MASK_VALUE).all()
        assert ((split.images >= 0) & (split.images <= 1)).all()


def test_missing_files_name_the_variable_and_layout(tmp_path):
    with pytest.raises(MNISTDataError) as info:
        load_mnist(tmp_path, train=True, download=False)
    message = str(info.value)
    assert "CVAE_DATA_DIR" in message and f"{tmp_path}/MNIST/raw/*.gz" in message


def test_failed_download_gets_the_same_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(
        "torchvision.datasets.mnist.download_and_extract_archive", offline
    )
    with pytest.raises(MNISTDataError, match="CVAE_DATA_DIR"):
        load_mnist(tmp_path, train=False, download=True)


def test_environment_variable_sets_the_root(tmp_path, monkeypatch):
    monkeypatch.setenv("CVAE_DATA_DIR", str(tmp_path))
    assert data.default_data_dir() == tmp_path
    with pytest.raises(MNISTDataError, match=str(tmp_path)):
        load_mnist(download=False)


def test_corrupt_archive_is_reported(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not really gzip")
    with pytest.raises(MNISTDataError, match="MD5"):
        load_mnist(tmp_path, train=False)


def test_truncated_unpacked_file_is_reported(tmp_path):
    source = data.default_data_dir() / "MNIST" / "raw"
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        unpacked = source / name
        if not unpacked.exists():
            load_mnist(train=False)
        content = Path(unpacked).read_bytes()
        (raw / name).write_bytes(
            content[: len(content) // 2] if "images" in name else content
        )
    with pytest.raises(MNISTDataError, match="unreadable|unpacked"):
        load_mnist(tmp_path, train=False, download=False)
