"""Measuring speed: the Pyro example's per-item dataset, the bench table, and where a
step's time goes (the timings themselves: tests/test_cli.py)."""

from __future__ import annotations

import math

import pytest

from cvae_helpers import speed
from cvae_helpers.data import (
    MASK_VALUE,
    load_mnist,
)
from cvae_helpers.speed import PyroExampleMNIST, bench_table, benchmark

BENCH = {
    "paths": ["svi", "pyro", "pyro_example"],
    "svi_baseline_epoch_s": 4.0,
    "svi_cvae_epoch_s": 12.5,
    "pyro_baseline_epoch_s": 3.0,
    "pyro_cvae_epoch_s": 5.0,
    "pyro_example_baseline_epoch_s": 10.0,
    "pyro_example_cvae_epoch_s": 25.0,
}


def test_bench_table_gives_seconds_and_how_many_times_faster_than_the_pyro_example():
    lines = bench_table(BENCH).splitlines()
    assert lines == [
        "| seconds per 60k-image epoch | baseline | CVAE | CVAE: Pyro example ÷ this |",
        "|---|---|---|---|",
        "| Pyro `SVI`, in-memory batches | 4.0 | 12.5 | 2.0× |",
        "| `Trace_ELBO` + one fused Adam, in-memory batches (the book's) | 3.0 | 5.0 | 5.0× |",
        "| `Trace_ELBO`, per-item `DataLoader` (the Pyro example) | 10.0 | 25.0 | – |",
    ]
    # without the Pyro example there is nothing to divide by: no ratio column
    alone = {
        key: value for key, value in BENCH.items() if not key.startswith("pyro_example")
    }
    lines = bench_table({**alone, "paths": ["pyro"]}).splitlines()
    assert lines == [
        "| seconds per 60k-image epoch | baseline | CVAE |",
        "|---|---|---|",
        "| `Trace_ELBO` + one fused Adam, in-memory batches (the book's) | 3.0 | 5.0 |",
    ]


def test_speed_table_puts_bench_results_side_by_side():
    bf16 = {"paths": ["pyro"], "pyro_baseline_epoch_s": 2.5, "pyro_cvae_epoch_s": 4.0}
    lines = speed.speed_table({"fp32": BENCH, "bf16": bf16}).splitlines()
    assert lines[0] == "| seconds per 60k-image epoch | fp32 | bf16 |"
    assert lines[2:] == [
        "| baseline: `Trace_ELBO` + one fused Adam, in-memory batches (the book's) | 3.00 | 2.50 |",
        "| CVAE: `Trace_ELBO` + one fused Adam, in-memory batches (the book's) | 5.00 | 4.00 |",
        "| baseline: `Trace_ELBO`, per-item `DataLoader` (the Pyro example) | 10.00 | – |",
        "| CVAE: `Trace_ELBO`, per-item `DataLoader` (the Pyro example) | 25.00 | – |",
    ]


def test_pyro_example_dataset_masks_each_item():
    load_mnist(
        train=True
    )  # finds (or downloads) and unpacks the files, or fails clearly
    from cvae_helpers.config import default_data_dir

    dataset = PyroExampleMNIST(default_data_dir(), num_quadrant_inputs=3)
    item = dataset[0]
    assert item["input"].shape == item["output"].shape == (28, 28)
    assert (item["input"][14:, 14:] == MASK_VALUE).all() and (
        item["output"][:14] == MASK_VALUE
    ).all()


def test_unknown_path_is_refused():
    with pytest.raises(
        ValueError,
        match=r"Unknown paths \['seed'\]; choose from \('pyro', 'svi', 'pyro_example'\)",
    ):
        benchmark(paths=["pyro", "seed"])


STEPS, WARMUP, BATCH = 10, 2, 16


@pytest.fixture(scope="module")
def step_report():
    return speed.profile_cvae_step(num_steps=STEPS, warmup=WARMUP, batch_size=BATCH)


def test_a_profiled_step_is_split_into_parts_that_are_each_a_share_of_it(step_report):
    """No wall-clock thresholds: each part is a non-negative share of the step, and
    the matmuls and the Python around them real parts of it."""
    assert set(step_report) == {"svi", "pyro"}
    for engine, parts in step_report.items():
        assert set(parts) == {*speed.STEP_PARTS, "total"}
        assert all(math.isfinite(value) and value >= 0 for value in parts.values()), (
            engine,
            parts,
        )
        assert 0 < parts["matmuls"] < parts["total"], (engine, parts)
        assert 0 < parts["Python and framework"] < parts["total"], (engine, parts)
    table = speed.profile_table(step_report)
    assert table.splitlines()[0] == (
        "| ms per CVAE step (batch 128) | Pyro `SVI` (per-parameter `Adam`) "
        "| `Trace_ELBO` + one fused Adam (the book's) |"
    )
    svi, book = step_report["svi"], step_report["pyro"]
    assert table.splitlines()[2] == (
        f"| matmuls | {svi['matmuls']:.2f} ({svi['matmuls'] / svi['total']:.0%}) | "
        f"{book['matmuls']:.2f} ({book['matmuls'] / book['total']:.0%}) |"
    )
    assert table.splitlines()[-1].startswith("| total | ")


def test_both_optimizers_are_counted(step_report):
    """pyro.optim's Adam runs plain tensor ops, one parameter at a time: they are
    counted as the optimizer because they run inside Optimizer.step, not by their
    names; the fused Adam is one op per step."""
    assert step_report["svi"]["optimizer"] > 0 and step_report["pyro"]["optimizer"] > 0


def test_step_parts_are_named_by_op():
    from cvae_helpers.speed import _step_part

    assert _step_part("aten::addmm") == _step_part("aten::mm") == "matmuls"
    assert _step_part("aten::mkldnn_linear") == "matmuls"
    assert _step_part("aten::_fused_adam_") == "optimizer"
    assert _step_part("aten::_foreach_mul_") == "optimizer"
    assert _step_part("aten::softplus") == "other tensor ops"
    assert _step_part("autograd::engine::evaluate_function: AddmmBackward0") is None
