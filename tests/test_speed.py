"""Measuring speed: the Pyro example's per-item dataset and the bench table (timings: see test_cli)."""

from __future__ import annotations

import pytest

from cvae_helpers.data import MASK_VALUE, load_mnist
from cvae_helpers.speed import PyroExampleMNIST, bench_table, benchmark


def test_bench_table_gives_seconds_and_ratios():
    table = bench_table({"baseline_epoch_s": 3.0, "cvae_epoch_s": 8.0,
                         "pyro_example_baseline_epoch_s": 21.0, "pyro_example_cvae_epoch_s": 32.0})
    lines = table.splitlines()
    assert lines[0] == ("| seconds per 60k-image epoch | in-memory (this book) | per-item DataLoader "
                        "(Pyro example) | ratio |")
    assert lines[2:] == ["| baseline | 3.0 | 21.0 | 7.0× |", "| CVAE | 8.0 | 32.0 | 4.0× |"]


def test_pyro_example_dataset_masks_each_item():
    load_mnist(train=True)  # finds (or downloads) and unpacks the files, or fails clearly
    from cvae_helpers.config import default_data_dir

    dataset = PyroExampleMNIST(default_data_dir(), num_quadrant_inputs=3)
    item = dataset[0]
    assert item["input"].shape == item["output"].shape == (28, 28)
    assert (item["input"][14:, 14:] == MASK_VALUE).all() and (item["output"][:14] == MASK_VALUE).all()


def test_unknown_pipeline_is_refused():
    with pytest.raises(ValueError, match="pipeline must be one of"):
        benchmark(pipeline="seed")
