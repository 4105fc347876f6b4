"""The seed, protocol and converged studies: their run lists, commands and resumption
(cvae_helpers/studies.py), their summaries and report (cvae_helpers/study_report.py),
and the protocol levers they pull (config)."""

from __future__ import annotations

import json
import math
import shlex
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from cvae_helpers import cli, studies, study_report
from cvae_helpers.config import (
    CONVERGED_LEVERS,
    LEVERS,
    PROFILES,
    RunSpec,
    get_profile,
    split_levers,
    with_levers,
)
from cvae_helpers.pipeline import checkpoint_configs, checkpoint_paths
from cvae_helpers.results import DECODER_DIRS

REFERENCE = Path(__file__).resolve().parent.parent / "results" / "reference"
COMMITTED = REFERENCE / studies.STUDIES_SUBDIR


def test_full_profile_cache_key_is_unchanged_by_the_levers():
    """The levers are left out of the key at the tutorial's values: every checkpoint
    and release file trained before them keeps its key."""
    assert PROFILES["full"].training_dict() == {
        "name": "full",
        "train_size": None,
        "val_size": None,
        "max_epochs": 50,
        "patience": 3,
        "batch_size": 128,
        "learning_rate": 1e-3,
    }


def test_levers_make_profiles_that_share_the_tutorials_baseline(tmp_path):
    full = PROFILES["full"]
    long = get_profile("full-long-lr-decay")
    assert (long.name, long.patience, long.max_epochs, long.lr_decay) == (
        "full-long-lr-decay",
        10,
        300,
        0.5,
    )
    assert get_profile("quick-long").max_epochs == 6 * PROFILES["quick"].max_epochs
    assert get_profile("full-wide").hidden_units == 1000
    assert get_profile("full-analytic-kl").analytic_kl
    assert not long.fetch_pretrained  # the release has no such models
    spec = RunSpec.create(1, long, checkpoint_dir=tmp_path, device="cpu")
    tutorial = RunSpec.create(1, full, checkpoint_dir=tmp_path, device="cpu")
    assert checkpoint_paths(spec)[0] == checkpoint_paths(tutorial)[0]
    assert checkpoint_paths(spec)[1].parent.name == "q1_seed0"
    assert checkpoint_paths(spec)[1].parent.parent.name == "full-long-lr-decay"
    base_key, cvae_key = checkpoint_configs(spec)
    assert base_key == checkpoint_configs(tutorial)[0]
    assert cvae_key["profile"]["lr_decay"] == 0.5 and cvae_key["baseline"] == base_key
    wide_key = checkpoint_configs(replace(tutorial, profile=get_profile("full-wide")))
    assert wide_key[1]["hidden_1"] == wide_key[1]["hidden_2"] == 1000
    # a profile given levers by overrides still trains its baseline without them
    assert get_profile("full", lr_decay=0.5).for_baseline.lr_decay is None


def test_profile_names_with_levers_parse_or_say_what_exists():
    assert split_levers("long-lr-decay") == ["long", "lr-decay"]
    assert split_levers("lr-decay-long") == ["lr-decay", "long"]
    assert split_levers("long-bogus") is None
    with pytest.raises(ValueError, match="levers .*'long'.*joined by '-'"):
        get_profile("full-bogus")
    with pytest.raises(ValueError, match="Unknown lever 'fast'"):
        with_levers(PROFILES["full"], ["fast"])


def test_study_runs_at_the_full_budget():
    full = PROFILES["full"]
    seeds = studies.study_runs("seeds", full)
    assert len(seeds) == 3 * (5 + 3)
    assert {r.seed for r in seeds if not r.decoder_sees_input} == set(range(5))
    assert {r.seed for r in seeds if r.decoder_sees_input} == {0, 1, 2}
    protocols = studies.study_runs("protocols", full)
    assert len(protocols) == (1 + len(LEVERS)) * 3
    assert {r.num_quadrant_inputs for r in protocols} == {1}
    assert all(r.large_samples for r in protocols)
    # the tutorial protocol's runs are the seed study's: one file each
    names = {r.name for r in seeds}
    shared = [r for r in protocols if r.name in names]
    assert [r.name for r in shared] == [f"full_q1_pyz_seed{s}" for s in range(3)]
    assert len({r.name for r in seeds + protocols}) == len(seeds) + len(protocols) - 3
    # the converged protocol: every setting, the paper's decoder's seeds, large S
    converged = studies.study_runs("converged", full)
    assert [(r.num_quadrant_inputs, r.seed) for r in converged] == [
        (q, s) for q in (1, 2, 3) for s in range(3)
    ]
    assert {r.profile for r in converged} == {"full-long-analytic-kl-lr-decay"}
    assert all(r.large_samples and not r.decoder_sees_input for r in converged)
    # the quick budget's smoke test: one setting, three seed-study runs
    assert len(studies.study_runs("seeds", PROFILES["quick"])) == 3
    assert studies.study_runs("converged", PROFILES["quick"])[0].profile == (
        "quick-long-analytic-kl-lr-decay"
    )
    with pytest.raises(ValueError, match="Unknown study 'other'"):
        studies.study_runs("other", full)


def test_each_listed_command_is_the_run_it_names(tmp_path):
    """``study list`` prints commands that the command line parses back to the same
    run: what a scheduler is handed runs exactly that."""
    for study in studies.STUDIES:
        for run in studies.study_runs(study, PROFILES["full"]):
            words = shlex.split(run.command(tmp_path))
            assert words[:3] == ["python", "-m", "cvae_helpers"]
            args = cli.build_parser().parse_args(words[3:])
            parsed = studies.StudyRun(
                args.profile,
                args.quadrants,
                args.decoder_sees_input,
                args.seed,
                args.large_samples,
            )
            assert parsed == run and args.results == tmp_path
    for study in studies.STUDIES:  # the parser's choices are written out
        assert cli.build_parser().parse_args(["study", "list", study]).study == study


def test_a_run_is_done_when_its_file_has_what_it_needs(tmp_path, capsys, monkeypatch):
    run = studies.StudyRun("full-long", 1, False, 2, large_samples=True)
    assert not run.done(tmp_path)
    run.path(tmp_path).write_text(json.dumps({"cvae_nll_is": 1.0}))
    assert not run.done(tmp_path)  # written by the seed study, without large S
    assert replace(run, large_samples=False).done(tmp_path)
    run.path(tmp_path).write_text(json.dumps({"is_large_s": {}}))
    assert run.done(tmp_path)
    assert (
        cli.main(
            ["study", "list", "protocols", "--missing", "--results", str(tmp_path)]
        )
        == 0
    )
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == len(studies.study_runs("protocols", PROFILES["full"])) - 1
    assert not any(
        "--profile full-long --quadrants 1 --seed 2 " in line for line in listed
    )
    # a run that is done is not run again (the seed study lists runs the protocol
    # study may have written, with more in them)
    monkeypatch.setattr(studies, "run_study_run", lambda *a, **k: pytest.fail("reran"))
    words = shlex.split(run.command(tmp_path))[3:]
    assert cli.main(words) == 0
    assert "is there already" in capsys.readouterr().out


def _record(profile, q, sees_input, seed, value, val_loss=None, large=None):
    record = {
        "profile": profile,
        "num_quadrant_inputs": q,
        "decoder_sees_input": sees_input,
        "seed": seed,
        "num_samples": 100,
        "epochs_cvae": 30 + seed,
        "curves": {"best_val_loss": val_loss if val_loss is not None else value},
        "provenance": {"device_type": "cpu", "eval_seconds": 36.0, "commit": "abc",
                       "engine": "fast", "device": "cpu", "cpu": "x", "finished": str(seed)},
        "profile_settings": {"baseline_profile": None},
        "trained_by": {"baseline": "fast", "cvae": "fast"},
        "epoch_seconds_baseline": 360.0,
        "epoch_seconds_cvae": 720.0,
    }  # fmt: skip
    for key in study_report.ESTIMATOR_ROWS.values():
        record[key], record[f"{key}_stderr"] = value, 0.2
    if large is not None:
        record["is_large_s"] = {"sample_sizes": [1000], "mean": [large]}
    return record


def test_seed_spread_and_the_decoder_comparison_by_hand():
    records = [
        _record("full", 3, False, s, v) for s, v in enumerate([22.0, 23.0, 24.0])
    ]
    records += [
        _record("full", 3, True, s, v) for s, v in enumerate([20.0, 21.5, 21.0])
    ]
    records += [_record("full", 1, False, s, v) for s, v in enumerate([67.0, 69.0])]
    records += [_record("full", 1, True, s, v) for s, v in enumerate([68.0, 68.5])]
    spread = study_report.seed_spread(records)[3, False]["CVAE IS"]
    assert (spread.mean, spread.seed_sd, spread.test_stderr, spread.seeds) == (
        23.0,
        1.0,
        0.2,
        3,
    )
    differences = study_report.decoder_differences(records)
    three = differences[3, "CVAE IS"]
    assert three["differences"] == [-2.0, -1.5, -3.0]
    assert three["mean"] == pytest.approx(-13 / 6)
    assert three["seed_spread"] == 1.0 and three["verdict"] == "beyond"
    one = differences[1, "CVAE IS"]
    assert one["mean"] == pytest.approx(0.25) and one["verdict"] == "within"
    assert (3, "NN") not in differences  # one baseline under both decoders
    table = study_report.decoder_table(records)
    assert "-2.00, -1.50, -3.00" in table and "| yes |" in table and "| no |" in table
    assert "| -2.17 | 0.76 | 1.00 | yes |" in table  # mean, paired sd, spread, verdict


def test_the_protocol_is_chosen_on_validation_never_on_the_test_set():
    """The protocol with the best test IS has the worse validation loss: the choice
    follows validation."""
    records = [
        _record("full", 1, False, s, 68.0, val_loss=72.0, large=67.5) for s in range(3)
    ]
    records += [
        _record("full-long", 1, False, s, 66.0 + s, val_loss=70.0 + s, large=65.0 + s)
        for s in range(3)
    ]
    records += [
        _record("full-wide", 1, False, s, 60.0, val_loss=75.0, large=59.0)
        for s in range(3)
    ]
    assert study_report.chosen_protocol(records) == "full-long"
    assert study_report.chosen_protocol(records[:3]) is None  # one protocol: no choice
    # long: 71 ± 1 against 72 ± 0, a gain of 1.0, not more than the sd 1.0; wide worse
    assert study_report.levers_that_help(records, "full") == []
    better = [_record("full-lr-decay", 1, False, s, 66.0, val_loss=70.0 + 0.1 * s)
              for s in range(3)]  # fmt: skip
    assert study_report.levers_that_help(records + better, "full") == ["lr-decay"]
    one_seed = [_record("full-analytic-kl", 1, False, 0, 60.0, val_loss=60.0)]
    # one seed has no spread to beat
    assert study_report.levers_that_help(records + one_seed, "full") == []
    summary = study_report.protocol_summary(records)["full-long"]
    assert summary["is"] == (67.0, 1.0) and summary["is_large_s"] == (66.0, 1.0)
    assert summary["gap_is_large_s"] == pytest.approx(66.0 - 64.05)
    table = study_report.protocol_table(records)
    assert (
        "| full-long | 3 | 31 | 71.00 ± 1.00 | 67.00 ± 1.00 | 66.00 ± 1.00 |" in table
    )
    assert "IS, S = 1000" in table and "IS, S = 100 " in table


def test_compute_hours_count_a_shared_baseline_once():
    records = [_record("full", 1, False, 0, 68.0), _record("full", 1, True, 0, 68.0)]
    # one baseline (0.1 h), two CVAEs (0.2 h each), two evaluations (0.01 h each)
    assert study_report.compute_hours(records) == {"cpu": pytest.approx(0.52)}
    # the reference's models, reused: only the evaluation is the study's
    reused = _record("full", 2, False, 0, 50.0)
    reused["trained_by"] = {"baseline": "pyro", "cvae": "pyro"}
    assert study_report.compute_hours([reused]) == {"cpu": pytest.approx(0.01)}
    adopted = {**reused, "provenance": {**reused["provenance"], "source": "x.json"}}
    assert study_report.compute_hours([adopted]) == {}


def test_report_holds_every_table(tmp_path):
    full = PROFILES["full"]
    for run in (
        studies.study_runs("seeds", full)[:4]
        + studies.study_runs("protocols", full)[-3:]
        + studies.study_runs("converged", full)[:1]
    ):
        record = _record(run.profile, run.num_quadrant_inputs,
                         run.decoder_sees_input, run.seed, 60.0 + run.seed - (run.profile == "full-wide"), large=59.0)  # fmt: skip
        studies.write_run(record, run, tmp_path)
    text = study_report.write_report(tmp_path, full).read_text()
    assert "Runs found: seeds 4 of 24, protocols 6 of 15, converged 1 of 9." in text
    assert "Levers beyond the seed spread on the validation split: none." in text
    for heading in ("## Seed spread", "## The two decoders", "as commonly quoted",
                    "## Protocols", "Chosen on the validation split: `full-wide`",
                    "## The converged protocol (`full-long-analytic-kl-lr-decay`)",
                    "converged protocol, S = 1000", "## Provenance"):  # fmt: skip
        assert heading in text
    assert "| abc | fast | cpu | x | 8 |" in text  # 4 + 6 + 1 runs, 3 of them shared


def test_a_tiny_study_runs_end_to_end_and_resumes(tmp_path, monkeypatch):
    """run_study on a few hundred MNIST images: every run written with its curves and
    provenance; a second call runs nothing (every file is there)."""
    profile = get_profile(
        "quick", train_size=256, val_size=128, test_size=64, max_epochs=2,
        num_samples=4, study_seeds=2, study_paper_seeds=1, study_large_samples=6,
    )  # fmt: skip
    template = RunSpec.create(1, profile, device="cpu", checkpoint_dir=tmp_path / "ck")
    records = studies.run_study("protocols", template, tmp_path / "runs")
    assert [r["profile"] for r in records] == [
        p.name for p in studies.protocol_profiles(profile)
    ]
    wide = records[-1]
    assert wide["profile_settings"]["hidden_units"] == 1000
    assert wide["is_large_s"]["sample_sizes"] == [6]
    assert len(wide["curves"]["val_loss"]) == 2
    assert "engine" not in wide["provenance"]
    assert wide["trained_by"]["cvae"] == "Trace_ELBO, one Adam"
    assert wide["provenance"]["device_type"] == "cpu"
    monkeypatch.setattr(studies, "run_study_run", lambda *a, **k: pytest.fail("reran"))
    again = studies.run_study("protocols", template, tmp_path / "runs")
    assert again == records


def test_converged_is_the_tutorials_profile_with_the_chosen_levers(tmp_path):
    full, named = PROFILES["full"], get_profile("converged")
    assert named == with_levers(full, CONVERGED_LEVERS)
    assert named.name == "full-long-analytic-kl-lr-decay"  # its runs say what trained
    assert (named.patience, named.max_epochs, named.analytic_kl, named.lr_decay) == (
        10,
        300,
        True,
        0.5,
    )
    assert named.hidden_units == full.hidden_units and not named.fetch_pretrained
    spec = RunSpec.create(1, "converged", checkpoint_dir=tmp_path, device="cpu")
    tutorial = RunSpec.create(1, full, checkpoint_dir=tmp_path, device="cpu")
    assert checkpoint_paths(spec)[0] == checkpoint_paths(tutorial)[0]  # one baseline
    # the book's default stays the tutorial's protocol
    assert get_profile("full") is full and full.patience == 3


def test_the_named_profile_runs_under_the_name_of_its_levers(tmp_path, monkeypatch):
    monkeypatch.setattr(
        studies, "run_study_run", lambda run, *a, **k: {"run": run.name}
    )
    words = ["study", "run", "--profile", "converged", "--quadrants", "2", "--seed", "1",
             "--large-samples", "--results", str(tmp_path)]  # fmt: skip
    assert cli.main(words) == 0
    written = tmp_path / "full-long-analytic-kl-lr-decay_q2_pyz_seed1.json"
    assert json.loads(written.read_text()) == {"run": written.stem}
    assert (
        studies.study_runs("converged", PROFILES["full"])[4].path(tmp_path) == written
    )


def test_the_converged_levers_are_those_the_committed_protocol_study_found():
    """CONVERGED_LEVERS was chosen from the committed protocol study, on validation:
    the levers that beat the tutorial's protocol by more than the seed spread."""
    protocols = studies.load_runs(
        COMMITTED, studies.study_runs("protocols", PROFILES["full"])
    )
    assert len(protocols) == len(studies.study_runs("protocols", PROFILES["full"]))
    assert tuple(study_report.converged_levers(protocols, "full")) == CONVERGED_LEVERS


def test_converged_levers_fall_back_on_the_chosen_protocol():
    tutorial = [_record("full", 1, False, s, 68.0, val_loss=72.0 + s) for s in range(3)]
    wide = [
        _record("full-wide", 1, False, s, 66.0, val_loss=71.5 + s) for s in range(3)
    ]
    # wide is chosen (71.5 < 72.0) but within the spread (sd 1.0): its levers, alone
    assert study_report.levers_that_help(tutorial + wide, "full") == []
    assert study_report.converged_levers(tutorial + wide, "full") == ["wide"]
    # nothing to choose from
    assert study_report.converged_levers(tutorial, "full") == []


def test_the_converged_protocol_against_the_tutorial_paired_by_seed():
    name = "full-long-analytic-kl-lr-decay"
    seeds = [_record("full", 1, False, s, 68.0 + s) for s in range(5)]
    seeds += [_record("full", 1, True, s, 60.0) for s in range(3)]  # not the tutorial
    seeds += [_record("full", 3, False, s, 22.0 + 0.1 * s) for s in range(3)]
    converged = [_record(name, 1, False, s, 66.0 + s, large=65.0 + s) for s in range(3)]
    converged += [_record(name, 3, False, s, 22.0, large=21.0) for s in range(2)]
    summary = study_report.converged_summary(converged, seeds, "full")
    one = summary[1]
    assert one["paired_seeds"] == [0, 1, 2] and one["differences"] == [-2.0] * 3
    assert one["tutorial_is"] == (69.0, 1.0)  # seeds 0-2 only: paired
    assert one["seed_spread"] == 1.0 and one["verdict"] == "beyond"
    assert one["is_large_s"] == (66.0, 1.0) and one["large_s"] == 1000
    assert one["gap_is_large_s"] == pytest.approx(66.0 - 64.05)
    assert one["gap_verdict"] == "beyond"  # 1.95 above the paper against an sd of 1.0
    three = summary[3]
    assert three["differences"] == pytest.approx([0.0, -0.1])
    assert three["verdict"] == "within"  # 0.05 against an sd of 0.07
    assert three["is_large_s"] == (21.0, 0.0)
    assert three["gap_verdict"] == "beyond"  # 0.03 below the paper, no spread at all
    table = study_report.converged_table(converged, seeds, "full")
    assert (
        "| 1 | 3 | 31 | 69.00 ± 1.00 | 67.00 ± 1.00 | -2.00, -2.00, -2.00 | yes |"
        in (table)
    )
    assert "| 66.00 ± 1.00 | +1.95 |" in table and "IS, S = 1000" in table
    paper = study_report.paper_table(seeds, converged)
    assert (
        "| CVAE IS, p(y\\|z), converged protocol, S = 100 (mean ± sd over seeds) "
        in paper
    )
    assert "| 67.00 ± 1.00 | – | 22.00 ± 0.00 |" in paper  # no 2-quadrant runs
    assert (
        "converged protocol, S = 1000 (mean ± sd over seeds) | 66.00 ± 1.00 |" in paper
    )
    assert "converged" not in study_report.paper_table(seeds)
    # a converged run with no tutorial's run of its seed is reported, not paired
    lone = study_report.converged_summary(
        [_record(name, 2, False, 4, 45.0)], seeds, "full"
    )
    assert lone[2]["paired_seeds"] == [] and lone[2]["verdict"] == "unmeasured"


def test_larger_sd_is_nan_where_a_spread_is_not_measured():
    assert study_report.larger_sd(0.5, 1.5) == 1.5
    nan = float("nan")
    assert all(
        math.isnan(study_report.larger_sd(*pair)) for pair in ((nan, 1.0), (1.0, nan))
    )
    # nothing is beyond an unknown spread
    assert not 3.0 > study_report.larger_sd(nan, 1.0)
    verdicts = [study_report.spread_verdict(d, 1.0) for d in (-1.5, 0.5)]
    assert verdicts == ["beyond", "within"]
    assert study_report.spread_verdict(-9.0, nan) == "unmeasured"
    # a decoder with one seed: its difference is told as not measured, not as within
    one_seed = [_record("full", 2, False, s, 47.0 + s) for s in range(3)]
    one_seed.append(_record("full", 2, True, 0, 40.0))
    difference = study_report.decoder_differences(one_seed)[2, "CVAE IS"]
    assert difference["verdict"] == "unmeasured"
    assert "| -7.00 | – | – | – (one seed) |" in study_report.decoder_table(one_seed)


def test_bf16_is_read_against_the_seed_spread_of_its_estimator_and_decoder():
    seeds = [_record("full", 3, False, s, 22.0 + s) for s in range(3)]  # sd 1.0
    seeds.append(_record("full", 1, False, 0, 67.0))  # one seed: no spread
    seeds += [_record("full", 3, True, s, 21.0 + 5 * s) for s in range(3)]  # not read
    precision = {
        "estimator": "cvae_nll_is",
        "decoder_sees_input": False,
        "settings": {"1": {"difference": -0.2}, "2": {"difference": 0.1},
                     "3": {"difference": -1.5}},
    }  # fmt: skip
    read = study_report.bf16_against_spread(precision, seeds)
    assert sorted(read) == [1, 3]  # no seed study at 2 quadrants: nothing to read
    assert read[3] == {"difference": -1.5, "seed_sd": 1.0, "verdict": "beyond"}
    assert math.isnan(read[1]["seed_sd"]) and read[1]["verdict"] == "unmeasured"
    precision["settings"]["3"]["difference"] = 0.9
    assert study_report.bf16_against_spread(precision, seeds)[3]["verdict"] == "within"


def test_the_seed_studys_seed_zero_is_the_committed_reference(tmp_path):
    """The seed-0 records are made from the reference's metrics, numbers untouched;
    a reference of another seed or budget is not adopted."""
    written = studies.adopt_reference(REFERENCE, tmp_path, PROFILES["full"])
    assert sorted(p.name for p in written) == sorted(
        f"full_q{q}_{tag}_seed0.json" for q in (1, 2, 3) for tag in ("pyz", "pyxz")
    )
    for path in written:
        record = json.loads(path.read_text())
        sees_input = "_pyxz_" in path.name
        source = (
            f"{DECODER_DIRS[sees_input]}/metrics_q{record['num_quadrant_inputs']}.json"
        )
        metrics = json.loads((REFERENCE / source).read_text())
        assert {k: record[k] for k in metrics} == metrics
        assert record["provenance"]["source"] == source
        assert record["provenance"]["commit"] == (
            (REFERENCE / "logs" / "commit_reference.txt").read_text().strip()
        )
        # and the committed seed study holds the same numbers
        committed = json.loads((COMMITTED / path.name).read_text())
        for key in study_report.ESTIMATOR_ROWS.values():
            assert committed[key] == pytest.approx(metrics[key], abs=1e-4)
    assert studies.adopt_reference(REFERENCE, tmp_path, PROFILES["full"]) == []
    assert studies.adopt_reference(REFERENCE, tmp_path / "q", PROFILES["quick"]) == []
    other = replace(studies.study_runs("seeds", PROFILES["full"])[1])  # seed 1
    assert other.seed == 1 and studies.reference_record(REFERENCE, other) is None


def test_the_committed_report_is_written_from_the_committed_runs(tmp_path):
    for path in COMMITTED.glob("*.json"):
        shutil.copy(path, tmp_path)
    written = study_report.write_report(tmp_path, PROFILES["full"]).read_text()
    assert written == (COMMITTED / "README.md").read_text(), (
        "results/reference/studies/README.md is stale: run "
        "`python -m cvae_helpers study report`"
    )


def test_the_protocol_figure_zooms_in_where_the_protocols_part():
    from cvae_helpers.plotting import plot_protocol_curves

    curves = {"full": [120.0, 80.0, 72.5, 72.0], "full-long": [118.0, 79.0, 71.0, 70.0]}
    records = [
        {"profile": name, "curves": {"val_loss": [v + 0.1 * s for v in curve]}}
        for name, curve in curves.items()
        for s in range(2)
    ]
    whole, tail = plot_protocol_curves(records).axes
    assert whole.get_ylim()[1] == pytest.approx(119.05)  # the median first epoch
    low, high = tail.get_ylim()
    assert low < 70.0 and 72.1 < high < 80.0  # every best loss, not the first epochs
    assert [line.get_label() for line in whole.get_lines()[:1]] == ["full (2 seeds)"]
