"""Repository tooling (tools/, not installed): the reference run's report and its time
logs."""

from __future__ import annotations

import json

import pytest
from conftest import metrics_record

from tools.reference_report import (
    machine_description,
    read_time_log,
    write_readme,
    write_timings,
)

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
    # a resumed run's log (time -a): one entry per attempt, added up
    second = TIME_LOG.replace("1:02:03.50", "7:05.25").replace("2097152", "3145728")
    log.write_text(TIME_LOG + second)
    assert read_time_log(log) == {"wall_s": 3723.5 + 425.25, "peak_rss_mib": 3072.0}
    log.write_text("Command exited with non-zero status 1\n")
    with pytest.raises(ValueError, match="no /usr/bin/time -v report"):
        read_time_log(log)


def test_machine_description_is_the_record_s_not_this_machine_s():
    device = "cpu (Some CPU, AVX512 kernels, 2 threads)"
    assert machine_description({"device": device}) == device
    assert "not recorded" in machine_description({})


def test_reference_report_holds_provenance_tables_and_notes(tmp_path):
    for decoder, folder in ((False, "p_y_given_z"), (True, "p_y_given_xz")):
        (tmp_path / folder).mkdir()
        for q in (1, 2, 3):
            (tmp_path / folder / f"metrics_q{q}.json").write_text(
                json.dumps(metrics_record(q, decoder))
            )
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "time_p_y_given_z.txt").write_text(TIME_LOG)
    (tmp_path / "logs" / "started.txt").write_text("2026-01-02T03:04:05Z\n")
    (tmp_path / "bench.json").write_text(
        json.dumps(
            {
                "paths": ["svi", "pyro", "pyro_example"],
                "svi_baseline_epoch_s": 4.0,
                "svi_cvae_epoch_s": 16.0,
                "pyro_baseline_epoch_s": 3.0,
                "pyro_cvae_epoch_s": 8.0,
                "pyro_example_baseline_epoch_s": 21.0,
                "pyro_example_cvae_epoch_s": 32.0,
            }
        )
    )
    (
        tmp_path / "bf16"
    ).mkdir()  # make reference-bf16: the book's step in both precisions
    (tmp_path / "bf16" / "bench_fp32.json").write_text(
        json.dumps(
            {"paths": ["pyro"], "pyro_baseline_epoch_s": 3.5, "pyro_cvae_epoch_s": 8.5}
        )
    )
    (tmp_path / "bf16" / "bench_bf16.json").write_text(
        json.dumps(
            {"paths": ["pyro"], "pyro_baseline_epoch_s": 2.5, "pyro_cvae_epoch_s": 5.0}
        )
    )
    (tmp_path / "notes.md").write_text("- a note only a person can write\n")

    timings = json.loads(write_timings(tmp_path).read_text())
    assert timings["commands"] == [
        {
            "command": "train --profile full",
            "decoder_sees_input": False,
            "wall_s": 3723.5,
            "peak_rss_mib": 2048.0,
        }
    ]
    text = write_readme(tmp_path, "abc1234").read_text()
    # provenance: command, commit, start time, machine, versions, data
    assert (
        "make reference" in text
        and "`abc1234`" in text
        and "2026-01-02T03:04:05Z" in text
    )
    assert f"- Machine: {machine_description(metrics_record(1, False))}, no GPU" in text
    assert "torch 2.14.1, pyro 1.9.2" in text and "S = 100 samples" in text
    # one results table per decoder, in the order of the folders
    z, xz = (
        text.index("## Decoder p(y|z), the Pyro example's"),
        text.index("## Decoder p(y|x,z)"),
    )
    assert (
        z < xz
        and text.count("| CVAE (IS) | 70.00 ± 0.40 | 35.00 ± 0.40 | 23.33 ± 0.40 |")
        == 2
    )
    # time, memory and speed, then the notes last
    assert "| p(y\\|x,z) | 3 | 23 / 43 | 180 / 720 | 30.0 |" in text
    assert "| `train --profile full` | 62.1 min | 2048 MiB |" in text
    assert "| Pyro `SVI`, in-memory batches | 4.0 | 16.0 | 2.0× |" in text
    book = "`Trace_ELBO` + one fused Adam, in-memory batches (the book's)"
    assert f"| {book} | 3.0 | 8.0 | 4.0× |" in text
    assert f"| CVAE: {book} | 8.50 | 5.00 |" in text  # fp32, then bf16
    # what trained the models (these records predate the record)
    assert (
        "- Trained by: unrecorded (the hand-written loss of that time, the later `fast` "
        "engine), every model." in text
    )
    assert text.rstrip().endswith("- a note only a person can write")
    # an evaluation-only rerun names both commits
    again = write_readme(tmp_path, "abc1234", "def5678").read_text()
    assert "`abc1234` trained these models; `def5678` evaluated them again" in again
    assert "(the code that trained and evaluated these models)" not in again


def test_precision_quality_compares_settings_pairwise():
    import pytest

    from tools.precision_quality import compare

    fp32 = [{**metrics_record(q, False), "cvae_nll_is_stderr": 0.3} for q in (1, 2, 3)]
    bf16 = [
        {
            **r,
            "cvae_nll_is": r["cvae_nll_is"]
            + (1.0 if r["num_quadrant_inputs"] == 1 else 0.1),
        }
        for r in fp32
    ]
    result = compare(fp32, bf16)
    one = result["settings"]["1"]
    assert one["difference"] == pytest.approx(1.0) and one["stderr"] == pytest.approx(
        0.3 * 2**0.5
    )
    assert not one["within_noise"] and result["settings"]["2"]["within_noise"]
    assert not result["all_within_noise"]
    with pytest.raises(ValueError, match="settings differ"):
        compare(fp32, list(reversed(bf16)))


def test_merge_studies_joins_settings_and_refuses_mixed_runs(tmp_path):
    import pytest

    from tools.merge_studies import main, merge_studies

    def part(q, **header):
        return {
            "profile": "full",
            "seed": 0,
            "versions": {"torch": "2.11"},
            **header,
            "settings": {str(q): {"curve": q}},
        }

    merged = merge_studies([part(3), part(1), part(2)])
    assert list(merged["settings"]) == ["1", "2", "3"]
    assert merged["settings"]["2"] == {"curve": 2} and merged["seed"] == 0
    with pytest.raises(ValueError, match=r"differs from part 0 in \['seed'\]"):
        merge_studies([part(1), part(2, seed=1)])
    with pytest.raises(ValueError, match=r"more than one part"):
        merge_studies([part(1), part(1)])
    paths = []
    for q in (1, 2):
        paths.append(tmp_path / f"q{q}.json")
        paths[-1].write_text(json.dumps(part(q)))
    main([str(tmp_path / "all.json"), *map(str, paths)])
    assert json.loads((tmp_path / "all.json").read_text()) == merge_studies(
        [part(1), part(2)]
    )


def test_reference_report_of_a_run_of_the_three_settings_side_by_side(tmp_path):
    """A run whose records say what trained them (here: the engines of 2026-12-02 to
    2026-12-04), and whose time logs are one per quadrant setting."""
    for decoder, folder in ((False, "p_y_given_z"), (True, "p_y_given_xz")):
        (tmp_path / folder).mkdir()
        for q in (1, 2, 3):
            record = {**metrics_record(q, decoder), "engine": "pyro"}
            record["trained_by"] = {
                "baseline": "pyro",
                "cvae": "pyro" if q < 3 else "fast",
            }
            (tmp_path / folder / f"metrics_q{q}.json").write_text(json.dumps(record))
    (tmp_path / "logs").mkdir()
    for q in (1, 2, 3):
        (tmp_path / "logs" / f"time_q{q}.txt").write_text(TIME_LOG)
    text = write_readme(tmp_path, "abc1234").read_text()
    assert "--quadrants N` for both\n  decoders, the three settings one after" in text
    assert "- Trained by: `fast`, `pyro` (the CVAEs), `pyro` (the baselines)." in text
    timings = json.loads(write_timings(tmp_path).read_text())["commands"]
    assert [c["command"].split(",")[0] for c in timings] == [
        f"train --profile full --quadrants {q}" for q in (1, 2, 3)
    ]


def test_compare_reference_puts_each_estimator_of_two_runs_side_by_side(tmp_path):
    from tools.compare_reference import comparison_rows

    def write(folder, value, epochs):
        record = {"num_quadrant_inputs": 3, "epochs_cvae": epochs, "best_epoch_cvae": 9}
        for key in ("baseline_nll", "cvae_nll_mc", "cvae_nll_is", "cvae_neg_elbo"):
            record[key], record[f"{key}_stderr"] = value, 0.3
        path = tmp_path / folder / "p_y_given_z"
        path.mkdir(parents=True)
        (path / "metrics_q3.json").write_text(json.dumps(record))

    write("old", 22.0, 12)
    write("new", 22.5, 30)
    rows = comparison_rows(tmp_path / "old", tmp_path / "new")
    assert rows[2] == ["p(y|z)", 3, "CVAE IS", "22.00 ± 0.30", "22.50 ± 0.30", "+0.50",
                       "+1.2"]  # fmt: skip
    assert rows[-1][2:5] == ["CVAE epochs (best)", "12 (9)", "30 (9)"]
    assert len(rows) == 5  # the paper's decoder is in neither folder
