"""The speed report: parsing /usr/bin/time logs, the tables, and the reference README."""

from __future__ import annotations

import json

from cvae_helpers.benchmark import SeedStyleMNIST
from cvae_helpers.data import MASK_VALUE
from cvae_helpers.speed import bench_table, process_table, read_time_log, run_table, write_reference_readme

TIME_LOG = """\tCommand being timed: "python -m cvae_helpers train --profile full"
\tUser time (seconds): 2900.10
\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02:03.50
\tMaximum resident set size (kbytes): 2097152
"""


def test_time_log_parsing(tmp_path):
    log = tmp_path / "time.txt"
    log.write_text(TIME_LOG)
    assert read_time_log(log) == {"wall_s": 3723.5, "peak_rss_mib": 2048.0}
    log.write_text(TIME_LOG.replace("1:02:03.50", "7:05.25"))
    assert read_time_log(log)["wall_s"] == 425.25


def test_bench_table_gives_ratios():
    table = bench_table({"baseline_epoch_s": 3.0, "cvae_epoch_s": 8.0,
                         "seed_baseline_epoch_s": 21.0, "seed_cvae_epoch_s": 32.0})
    assert "| baseline | 3.0 | 21.0 | 7.0× |" in table and "| CVAE | 8.0 | 32.0 | 4.0× |" in table


def _record(q, decoder):
    return {"num_quadrant_inputs": q, "profile": "full", "seed": 0, "decoder_sees_input": decoder,
            "baseline_nll": 100.0 / q, "cvae_nll_mc": 80.0 / q, "cvae_nll_is": 70.0 / q,
            "cvae_neg_elbo": 75.0 / q, "baseline_nll_stderr": 0.5, "cvae_nll_mc_stderr": 0.5,
            "cvae_nll_is_stderr": 0.4, "cvae_neg_elbo_stderr": 0.4, "num_samples": 100,
            "num_test_images": 10000, "epochs_baseline": 20 + q, "epochs_cvae": 40 + q,
            "train_seconds": 300.0 * q, "eval_seconds": 30.0, "versions": {"torch": "2.14.1"}}


def test_reference_readme_holds_provenance_and_tables(tmp_path):
    for decoder, folder in ((False, "p_y_given_z"), (True, "p_y_given_xz")):
        (tmp_path / folder).mkdir()
        for q in (1, 2, 3):
            (tmp_path / folder / f"metrics_q{q}.json").write_text(json.dumps(_record(q, decoder)))
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "time_p_y_given_z.txt").write_text(TIME_LOG)
    (tmp_path / "bench.json").write_text(json.dumps(
        {"baseline_epoch_s": 3.0, "cvae_epoch_s": 8.0, "seed_baseline_epoch_s": 21.0,
         "seed_cvae_epoch_s": 32.0}))
    text = write_reference_readme(tmp_path, "abc1234").read_text()
    assert "`abc1234`" in text and "make reference" in text and "cores" in text
    assert "| CVAE (IS) | 70.00 ± 0.40 | 35.00 ± 0.40 | 23.33 ± 0.40 |" in text
    assert "| p(y|x,z) | 3 | 23 / 43 | 900 | 30 |" in run_table(tmp_path)
    assert "62.1 min | 2048 MiB" in process_table(tmp_path)
    assert "7.0×" in text


def test_seed_style_dataset_masks_each_item():
    dataset = SeedStyleMNIST(_data_root(), num_quadrant_inputs=3)
    item = dataset[0]
    assert item["input"].shape == item["output"].shape == (28, 28)
    assert (item["input"][14:, 14:] == MASK_VALUE).all() and (item["output"][:14] == MASK_VALUE).all()


def _data_root():
    from cvae_helpers.config import default_data_dir
    from cvae_helpers.data import load_mnist

    load_mnist(train=True)  # finds (or downloads) and unpacks the files, or fails clearly
    return default_data_dir()
