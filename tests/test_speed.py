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


def test_profile_parts_add_up_to_the_step():
    from cvae_helpers.speed import STEP_PARTS, profile_cvae_step, profile_table

    report = profile_cvae_step(num_steps=2, warmup=1, batch_size=16)
    assert set(report) == {"trace_elbo", "neg_elbo"}
    for parts in report.values():
        assert set(parts) == {*STEP_PARTS, "total"} and parts["matmuls"] > 0
        assert sum(parts[p] for p in STEP_PARTS) == pytest.approx(parts["total"], abs=1e-2)
    table = profile_table(report)
    assert table.splitlines()[0] == "| ms per CVAE step (batch 128) | Pyro `Trace_ELBO` | `CVAE.neg_elbo` |"
    assert table.splitlines()[-1].startswith("| total | ")


def test_step_parts_are_named_by_op():
    from cvae_helpers.speed import _step_part

    assert _step_part("aten::addmm") == _step_part("aten::mm") == "matmuls"
    assert _step_part("aten::_fused_adam_") == "optimizer"
    assert _step_part("aten::softplus") == "other tensor ops"
    assert _step_part("autograd::engine::evaluate_function: AddmmBackward0") is None
