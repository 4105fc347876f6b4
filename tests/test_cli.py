from __future__ import annotations

import json
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


@pytest.mark.parametrize("args", [
    ["train", "--output", "x", "--quadrants", "4"],
    ["train", "--quadrants", "1"],  # no --output
    ["train", "--output", "x", "--profile", "huge"],
    ["bench", "--batches", "0"],
    ["bench", "--pipeline", "seed"],  # the Pyro example's pipeline is called pyro_example
    ["fly"],
])
def test_bad_arguments_exit_non_zero(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", offline)
    code = main(["train", "--profile", "quick", "--quadrants", "1", "--output", str(tmp_path / "out"),
                 "--data-dir", str(tmp_path / "empty"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "CVAE_DATA_DIR" in err and "Traceback" not in err


def test_quick_train_writes_metrics_and_table_and_reuses_checkpoints(tmp_path):
    command = [sys.executable, "-m", "cvae_helpers", "train", "--profile", "quick", "--quadrants",
               "2", "--output", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "ckpt"),
               "--no-progress"]
    first = subprocess.run(command, capture_output=True, text=True, check=True)
    record = json.loads((tmp_path / "out" / "metrics_q2.json").read_text())
    keys = {"num_quadrant_inputs", "profile", "seed", "decoder_sees_input", "baseline_nll",
            "cvae_nll_mc", "cvae_nll_is", "cvae_neg_elbo", "baseline_nll_stderr",
            "cvae_nll_mc_stderr", "cvae_nll_is_stderr", "cvae_neg_elbo_stderr", "num_samples",
            "epochs_baseline", "epochs_cvae", "train_seconds", "epoch_seconds_baseline",
            "epoch_seconds_cvae", "versions"}
    assert keys <= set(record)
    assert record["profile"] == "quick" and record["num_quadrant_inputs"] == 2
    assert record["cvae_nll_is"] <= record["cvae_neg_elbo"]
    table = (tmp_path / "out" / "results.md").read_text()
    for row in ("NN (baseline)", "CVAE (MC)", "CVAE (IS)", "CVAE (−ELBO)", "gap"):
        assert row in table
    assert f"{record['cvae_nll_is']:.2f}" in table and "NN (baseline)" in first.stdout
    # a second run reuses the checkpoints and, seeded, reproduces every number
    subprocess.run(command, capture_output=True, text=True, check=True)
    again = json.loads((tmp_path / "out" / "metrics_q2.json").read_text())
    for key in ("baseline_nll", "cvae_nll_mc", "cvae_nll_is", "cvae_neg_elbo", "epochs_cvae"):
        assert again[key] == record[key]
    # the figures command finds the same cached models and writes the sample grid
    figures = subprocess.run(
        [sys.executable, "-m", "cvae_helpers", "figures", "--profile", "quick", "--quadrants", "2",
         "--output", str(tmp_path / "figs"), "--checkpoint-dir", str(tmp_path / "ckpt")],
        capture_output=True, text=True, check=True)
    png = tmp_path / "figs" / "grid_q2.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "grid_q2.png" in figures.stdout


def test_bench_prints_one_json_line():
    result = subprocess.run([sys.executable, "-m", "cvae_helpers", "bench", "--batches", "2",
                             "--batch-size", "64"], capture_output=True, text=True, check=True)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    figures = json.loads(lines[0])
    assert figures["baseline_epoch_s"] > 0 and figures["cvae_epoch_s"] > 0
    assert figures["load_and_mask_s"] > 0 and "pyro_example_cvae_epoch_s" not in figures


def test_bench_times_both_pipelines_side_by_side():
    result = subprocess.run([sys.executable, "-m", "cvae_helpers", "bench", "--batches", "2",
                             "--batch-size", "32", "--pipeline", "both"],
                            capture_output=True, text=True, check=True)
    figures = json.loads(result.stdout)
    for key in ("baseline_epoch_s", "cvae_epoch_s", "pyro_example_baseline_epoch_s",
                "pyro_example_cvae_epoch_s"):
        assert figures[key] > 0
    for model in ("baseline", "cvae"):
        ratio = figures[f"pyro_example_{model}_epoch_s"] / figures[f"{model}_epoch_s"]
        assert figures[f"{model}_speedup"] == round(ratio, 2)


def test_force_training_switch_is_off_unless_given():
    from cvae_helpers.cli import build_parser

    for command in ("train", "figures"):
        args = build_parser().parse_args([command, "--output", "out"])
        assert args.force_training is None  # then $CVAE_FORCE_TRAINING decides
        assert build_parser().parse_args([command, "--output", "out", "--force-training"]).force_training
