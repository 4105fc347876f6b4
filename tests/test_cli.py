from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from urllib.error import URLError

import pytest

from cvae_helpers.cli import main


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["bench", "--help"]])
def test_help(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 0
    assert "usage" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--output", "x", "--quadrants", "4"],
        ["train", "--quadrants", "1"],  # no --output
        ["train", "--output", "x", "--profile", "huge"],
        ["bench", "--batches", "0"],
        [
            "bench",
            "--paths",
            "seed",
        ],  # the Pyro example's pipeline is called pyro_example
        ["bench", "--paths"],  # at least one
        ["train", "--output", "x", "--engine", "fast"],  # one path: no engine to pick
        ["fly"],
    ],
)
def test_bad_arguments_exit_non_zero(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(
        "torchvision.datasets.mnist.download_and_extract_archive", offline
    )
    code = main(
        [
            "train",
            "--profile",
            "quick",
            "--quadrants",
            "1",
            "--output",
            str(tmp_path / "out"),
            "--data-dir",
            str(tmp_path / "empty"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "CVAE_DATA_DIR" in err and "Traceback" not in err


def test_quick_train_writes_metrics_and_table_and_reuses_checkpoints(tmp_path):
    command = [
        sys.executable,
        "-m",
        "cvae_helpers",
        "train",
        "--profile",
        "quick",
        "--quadrants",
        "2",
        "--output",
        str(tmp_path / "out"),
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        "--no-progress",
    ]
    environment = {**os.environ, "CVAE_ENGINE": "pyro"}
    first = subprocess.run(
        command, capture_output=True, text=True, check=True, env=environment
    )
    record = json.loads((tmp_path / "out" / "metrics_q2.json").read_text())
    keys = {
        "num_quadrant_inputs",
        "profile",
        "seed",
        "decoder_sees_input",
        "family",
        "baseline_nll",
        "cvae_nll_mc",
        "cvae_nll_is",
        "cvae_neg_elbo",
        "baseline_nll_stderr",
        "cvae_nll_mc_stderr",
        "cvae_nll_is_stderr",
        "cvae_neg_elbo_stderr",
        "num_samples",
        "epochs_baseline",
        "epochs_cvae",
        "train_seconds",
        "epoch_seconds_baseline",
        "epoch_seconds_cvae",
        "versions",
        "code",
        "trained_by",
    }
    assert keys <= set(record) and "alpha" not in record
    assert record["profile"] == "quick" and record["num_quadrant_inputs"] == 2
    assert record["family"] == "cvae" and "engine" not in record
    assert record["trained_by"] == {
        "baseline": "masked BCE, one Adam",
        "cvae": "Trace_ELBO, one Adam",
    }
    assert set(record["code"]) == {"commit", "package_modified"}
    assert record["cvae_nll_is"] <= record["cvae_neg_elbo"]
    table = (tmp_path / "out" / "results.md").read_text()
    for row in ("NN (baseline)", "CVAE (MC)", "CVAE (IS)", "CVAE (−ELBO)", "gap"):
        assert row in table
    assert f"{record['cvae_nll_is']:.2f}" in table and "NN (baseline)" in first.stdout
    # a second run reuses the checkpoints and, seeded, reproduces every number
    subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    again = json.loads((tmp_path / "out" / "metrics_q2.json").read_text())
    for key in (
        "baseline_nll",
        "cvae_nll_mc",
        "cvae_nll_is",
        "cvae_neg_elbo",
        "epochs_cvae",
    ):
        assert again[key] == record[key]
    # the figures command finds the same cached models and writes the sample grid
    figures = subprocess.run(
        [
            sys.executable,
            "-m",
            "cvae_helpers",
            "figures",
            "--profile",
            "quick",
            "--quadrants",
            "2",
            "--output",
            str(tmp_path / "figs"),
            "--checkpoint-dir",
            str(tmp_path / "ckpt"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    png = tmp_path / "figs" / "grid_q2.png"
    assert (
        png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "grid_q2.png" in figures.stdout
    )


def _bench(*paths: str) -> dict:
    """``bench`` for ``paths`` as the command line runs it: its one line of JSON."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cvae_helpers",
            "bench",
            "--batches",
            "2",
            "--batch-size",
            "32",
            "--paths",
            *paths,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def _positive_seconds(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_bench_times_each_path_asked_for_side_by_side():
    from cvae_helpers.speed import bench_table

    figures = _bench("pyro", "svi", "pyro_example")
    assert figures["paths"] == ["pyro", "svi", "pyro_example"]
    assert (
        figures["batch_size"],
        figures["num_batches"],
        figures["num_quadrant_inputs"],
    ) == (32, 2, 1)
    for path in ("pyro", "svi", "pyro_example"):
        for model in ("baseline", "cvae"):
            assert _positive_seconds(figures[f"{path}_{model}_epoch_s"]), (
                path,
                model,
                figures,
            )
    assert _positive_seconds(figures["load_and_mask_s"]) and _positive_seconds(
        figures["y_hat_precompute_s"]
    )
    # the table's last column: the Pyro example's CVAE epoch divided by each row's, from
    # the JSON
    rows = bench_table(figures).splitlines()[2:]
    assert len(rows) == 3
    for row, path in zip(rows, ("pyro", "svi", "pyro_example"), strict=True):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[2] == f"{figures[f'{path}_cvae_epoch_s']:.1f}"
        ratio = figures["pyro_example_cvae_epoch_s"] / figures[f"{path}_cvae_epoch_s"]
        assert cells[3] == ("–" if path == "pyro_example" else f"{ratio:.1f}×")


def test_bench_times_only_the_paths_asked_for():
    figures = _bench("svi")
    assert figures["paths"] == ["svi"]
    assert _positive_seconds(figures["svi_baseline_epoch_s"]) and _positive_seconds(
        figures["svi_cvae_epoch_s"]
    )
    assert not any(key.startswith(("pyro_", "pyro_example_")) for key in figures), (
        figures
    )
    assert figures["threads"] >= 1 and figures["device_description"].startswith("cpu")


def test_force_training_switch_is_off_unless_given():
    from cvae_helpers.cli import build_parser

    for command in ("train", "figures"):
        args = build_parser().parse_args([command, "--output", "out"])
        assert args.force_training is None  # then $CVAE_FORCE_TRAINING decides
        assert (
            build_parser()
            .parse_args([command, "--output", "out", "--force-training"])
            .force_training
        )
