"""Results files, tables and labels: what the chapters and the reference report
print."""

from __future__ import annotations

import json

import pytest
from conftest import metrics_record

from cvae_helpers.config import DECODERS
from cvae_helpers.data import quadrant_label
from cvae_helpers.results import (
    PYRO_TUTORIAL,
    baseline_gap_table,
    headline_table,
    load_reference,
    load_reference_json,
    load_results,
    markdown_table,
    published_comparison_table,
    reference_dir,
    results_table,
    run_table,
    timings_table,
    write_results,
)


def test_labels():
    assert [quadrant_label(q) for q in (1, 2, 3)] == [
        "1 quadrant",
        "2 quadrants",
        "3 quadrants",
    ]
    assert DECODERS[False].label == "p(y|z)" and DECODERS[True].label == "p(y|x,z)"
    assert DECODERS[False].long_label == "p(y|z), the Pyro example's (default)"
    assert DECODERS[True].long_label == "p(y|x,z), the paper's"


def test_markdown_table():
    assert markdown_table(["a", "b"], [[1, "x"], [2.5, "y"]]) == (
        "| a | b |\n|---|---|\n| 1 | x |\n| 2.5 | y |\n"
    )
    # a pipe inside a cell, as in p(y|z), is escaped instead of splitting the cell
    assert markdown_table(["decoder"], [["p(y|z)"]]).splitlines()[2] == r"| p(y\|z) |"


def test_results_table_rows_columns_and_missing_settings():
    table = results_table([metrics_record(1), metrics_record(3)])
    lines = table.splitlines()
    assert (
        lines[0]
        == "| negative CLL (nats/image) | 1 quadrant | 2 quadrants | 3 quadrants |"
    )
    assert lines[2] == "| NN (baseline) | 100.00 ± 0.50 | – | 33.33 ± 0.50 |"
    assert lines[4] == "| CVAE (IS) | 70.00 ± 0.40 | – | 23.33 ± 0.40 |"
    assert lines[-1] == "| gap: NN − CVAE (IS) | 30.00 | – | 10.00 |"


def test_headline_and_published_tables():
    records = [metrics_record(q) for q in (1, 2, 3)]
    assert (
        headline_table(records).splitlines()[3]
        == "| CVAE, importance sampling | 70.0 | 35.0 | 23.3 |"
    )
    table = published_comparison_table(
        {False: records, True: [metrics_record(q, True) for q in (1, 2, 3)]}
    )
    lines = table.splitlines()
    assert (
        lines[2]
        == "| Pyro tutorial: NN (baseline) | "
        + " | ".join(f"{PYRO_TUTORIAL['baseline_nll'][q]:.1f}" for q in (1, 2, 3))
        + " |"
    )
    assert "| this book, p(y\\|z): CVAE (−ELBO) | 75.0 | 37.5 | 25.0 |" in lines
    # the baseline is shared by both decoders, so it appears once
    assert sum("NN (baseline)" in line and "this book" in line for line in lines) == 1
    assert "| this book, p(y\\|x,z): CVAE (IS) | 70.0 | 35.0 | 23.3 |" in lines


def test_baseline_gap_run_and_timings_tables():
    gap = {
        "settings": {
            str(q): {
                "book_50k_val_selected": 1.0 * q,
                "pyro_style_60k_test_selected": 2.0,
                "refit_60k_val_epochs": 3.0,
            }
            for q in (1, 2, 3)
        }
    }
    assert (
        "| this book: 50k, epoch chosen on validation | 1.00 | 2.00 | 3.00 |"
        in baseline_gap_table(gap)
    )
    runs = run_table({True: [metrics_record(2, True)]})
    assert runs.splitlines()[-1] == "| p(y\\|x,z) | 2 | 22 / 42 | 120 / 480 | 30.0 |"
    timings = {
        "commands": [
            {
                "command": "train --profile full",
                "wall_s": 1500.0,
                "peak_rss_mib": 2048.4,
            }
        ]
    }
    assert (
        timings_table(timings).splitlines()[-1]
        == "| `train --profile full` | 25.0 min | 2048 MiB |"
    )


def test_write_and_load_results(tmp_path):
    write_results([metrics_record(2)], tmp_path)
    write_results(
        [metrics_record(1)], tmp_path
    )  # a later setting joins the table of the same run
    assert [r["num_quadrant_inputs"] for r in load_results(tmp_path)] == [1, 2]
    text = (tmp_path / "results.md").read_text()
    assert "decoder p(y|z), the Pyro example's (default)" in text
    assert "| CVAE (MC) | 80.00 ± 0.50 | 40.00 ± 0.50 | – |" in text


def test_reference_dir_argument_environment_and_search(tmp_path, monkeypatch):
    monkeypatch.delenv("CVAE_REFERENCE_DIR", raising=False)
    checkout = tmp_path / "checkout"
    folder = checkout / "results" / "reference"
    for q in (1, 2, 3):
        (folder / "p_y_given_z").mkdir(parents=True, exist_ok=True)
        (folder / "p_y_given_z" / f"metrics_q{q}.json").write_text(
            json.dumps(metrics_record(q))
        )
    (folder / "p_y_given_xz").mkdir()
    (folder / "p_y_given_xz" / "metrics_q1.json").write_text(
        json.dumps(metrics_record(1, True))
    )
    (folder / "bench.json").write_text('{"cvae_epoch_s": 9.0}')
    (checkout / "book").mkdir()
    monkeypatch.chdir(checkout / "book")  # where a chapter runs
    assert reference_dir() == folder
    # an incomplete decoder is left out rather than shown with holes
    assert list(load_reference()) == [False] and len(load_reference()[False]) == 3
    assert load_reference_json("bench.json") == {"cvae_epoch_s": 9.0}
    assert load_reference_json("missing.json") is None
    monkeypatch.setenv("CVAE_REFERENCE_DIR", str(tmp_path / "elsewhere"))
    assert reference_dir() == tmp_path / "elsewhere" and load_reference() == {}
    assert reference_dir(folder) == folder
    monkeypatch.delenv("CVAE_REFERENCE_DIR")
    monkeypatch.chdir(tmp_path)  # no checkout above: nothing to find
    assert reference_dir() is None and load_reference() == {}
    assert load_reference_json("bench.json") is None


@pytest.mark.parametrize("name", ["bench.json", "baseline_gap.json", "timings.json"])
def test_the_committed_reference_files_are_readable(name):
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "results" / "reference"
    assert load_reference_json(name, root) is not None
    assert set(load_reference(root)) == {False, True}


def test_precision_and_levers_tables():
    """(The speed tables live with the measurements: tests/test_speed.py.)"""
    from cvae_helpers.results import levers_table, precision_table

    comparison = {
        "all_within_noise": False,
        "settings": {
            str(q): {
                "fp32": 68.0 / q,
                "bf16": 68.5 / q,
                "difference": 0.5 / q,
                "stderr": 0.3,
                "within_noise": q > 1,
                "epochs_fp32": 30,
                "epochs_bf16": 31,
            }
            for q in (1, 2, 3)
        },
    }
    rows = precision_table(comparison).splitlines()
    assert rows[2] == "| 1 quadrant | 68.00 | 68.50 | +0.50 ± 0.30 | no | 30 / 31 |"
    assert rows[3].split(" | ")[4] == "yes"
    table = levers_table({"levers": {"fast": 6.0, "slow": 9.5, "middle": 7.0}})
    assert [line.split(" | ")[0] for line in table.splitlines()[2:]] == [
        "| slow",
        "| middle",
        "| fast",
    ]
