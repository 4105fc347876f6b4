"""What the studies tell: their runs' records (:mod:`cvae_helpers.studies`) read as
spreads, differences, verdicts and tables.

Every comparison here is judged against the seed spread, the standard deviation across
seeds: a difference larger than it is evidence, a smaller one could be one seed's luck,
and one seed has no spread to judge by (:func:`spread_verdict`). Protocols are chosen
on the validation split, never on the test set (:func:`chosen_protocol`,
:func:`levers_that_help`). :func:`write_report` writes every table of a folder of runs
into its ``README.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev

from .config import Profile, converged, split_levers
from .results import QUADRANT_SETTINGS, decoder_label, markdown_table
from .studies import STUDIES, StudyRun, load_runs, study_runs

# The estimators the tables report, by metrics key.
ESTIMATOR_ROWS = {
    "NN": "baseline_nll",
    "CVAE MC": "cvae_nll_mc",
    "CVAE IS": "cvae_nll_is",
    "CVAE −ELBO": "cvae_neg_elbo",
}
# Sohn, Lee & Yan (2015), Table 1, MNIST, negative CLL, as it is commonly quoted: we
# could not check a copy of the paper, and the book says so wherever it shows them.
PAPER_AS_QUOTED = {
    "NN": {1: 100.03, 2: 62.14, 3: 26.01},
    "CVAE IS": {1: 64.05, 2: 44.96, 3: 20.97},
}


@dataclass(frozen=True)
class Spread:
    """One estimator over seeds: the mean, the standard deviation across
    seeds and the mean test-set standard error."""

    mean: float
    seed_sd: float
    test_stderr: float
    seeds: int

    @classmethod
    def of(cls, records: list[dict], key: str) -> Spread:
        values = [r[key] for r in records]
        sd = stdev(values) if len(values) > 1 else math.nan
        stderr = mean(r[f"{key}_stderr"] for r in records)
        return cls(mean(values), sd, stderr, len(values))


def larger_sd(*sds: float) -> float:
    """The largest of standard deviations across seeds: the spread a difference must
    exceed. NaN where any is NaN (one seed has no spread), so that nothing is called
    beyond a spread that was not measured."""
    return math.nan if any(math.isnan(sd) for sd in sds) else max(sds)


def spread_verdict(difference: float, spread: float) -> str:
    """``"beyond"`` the seed spread when ``|difference|`` exceeds it, else ``"within"``
    it; ``"unmeasured"`` where the spread is NaN (one seed so far)."""
    if math.isnan(spread):
        return "unmeasured"
    return "beyond" if abs(difference) > spread else "within"


# How a spread_verdict reads in a table's cell and in a sentence.
VERDICT_CELLS = {"beyond": "yes", "within": "no", "unmeasured": "– (one seed)"}
VERDICT_PHRASES = {
    "beyond": "beyond the seed spread",
    "within": "within the seed spread",
    "unmeasured": "the seed spread not measured yet (one seed)",
}


def _nats(value: float, sign: str = "") -> str:
    """A number of nats for a table: ``–`` where it is NaN (an sd of one seed)."""
    return "–" if math.isnan(value) else f"{value:{sign}.2f}"


def _mean_pm_sd(pair: tuple[float, float]) -> str:
    """``mean ± sd``, or the mean alone where one seed has no sd."""
    mean_value, sd = pair
    return _nats(mean_value) if math.isnan(sd) else f"{mean_value:.2f} ± {sd:.2f}"


def _group(records: Iterable[dict], *fields: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault(tuple(record[f] for f in fields), []).append(record)
    return groups


def seed_spread(records: list[dict]) -> dict[tuple[int, bool], dict[str, Spread]]:
    """Per (quadrants, decoder_sees_input): each estimator's :class:`Spread`."""
    groups = _group(records, "num_quadrant_inputs", "decoder_sees_input")
    return {
        key: {row: Spread.of(group, field) for row, field in ESTIMATOR_ROWS.items()}
        for key, group in sorted(groups.items())
    }


def seed_spread_table(records: list[dict]) -> str:
    """Rows (setting, decoder, estimator): mean, sd across seeds, mean test s.e."""
    rows = []
    for (q, sees_input), spreads in seed_spread(records).items():
        for row, spread in spreads.items():
            rows.append(
                [
                    q,
                    decoder_label(sees_input),
                    row,
                    spread.seeds,
                    f"{spread.mean:.2f}",
                    _nats(spread.seed_sd),
                    f"{spread.test_stderr:.2f}",
                ]
            )
    header = ["quadrants", "decoder", "estimator", "seeds", "mean",
              "sd across seeds", "mean test s.e."]  # fmt: skip
    return markdown_table(header, rows)


def decoder_differences(records: list[dict]) -> dict[tuple[int, str], dict]:
    """Per (quadrants, estimator): p(y|x,z) − p(y|z), paired by seed, against the seed
    spread: ``verdict`` is :func:`spread_verdict` of the mean difference against the
    larger of the two decoders' standard deviations across seeds."""
    spreads = seed_spread(records)
    by_key = _group(records, "num_quadrant_inputs", "decoder_sees_input", "seed")
    comparison = {}
    for q in sorted({r["num_quadrant_inputs"] for r in records}):
        seeds = sorted(
            s
            for (qq, sees, s) in by_key
            if qq == q and sees and (q, False, s) in by_key
        )
        if not seeds:
            continue
        for row, key in ESTIMATOR_ROWS.items():
            if row == "NN":  # the same baseline under both decoders
                continue
            diffs = [
                by_key[q, True, s][0][key] - by_key[q, False, s][0][key] for s in seeds
            ]
            spread = larger_sd(
                spreads[q, False][row].seed_sd, spreads[q, True][row].seed_sd
            )
            sd = stdev(diffs) if len(diffs) > 1 else math.nan
            comparison[q, row] = {
                "seeds": seeds,
                "differences": diffs,
                "mean": mean(diffs),
                "paired_sd": sd,
                "seed_spread": spread,
                "verdict": spread_verdict(mean(diffs), spread),
            }
    return comparison


def decoder_table(records: list[dict]) -> str:
    """:func:`decoder_differences` as a table: the paired differences, their mean and
    standard deviation, the seed spread and the verdict."""
    rows = [
        [
            q,
            row,
            ", ".join(f"{d:+.2f}" for d in c["differences"]),
            f"{c['mean']:+.2f}",
            _nats(c["paired_sd"]),
            _nats(c["seed_spread"]),
            VERDICT_CELLS[c["verdict"]],
        ]
        for (q, row), c in decoder_differences(records).items()
    ]
    header = ["quadrants", "estimator", "p(y|x,z) − p(y|z), per seed", "mean",
              "sd of the differences", "seed spread (larger sd)",
              "beyond the spread"]  # fmt: skip
    return markdown_table(header, rows)


def protocol_summary(records: list[dict]) -> dict[str, dict]:
    """Per protocol (profile): mean and sd over seeds of the best validation −ELBO,
    the epochs, IS at S = 100 and at the large S, and the gap of each IS to the paper's
    number as quoted; in the study's order."""
    summary = {}
    for (profile,), group in _group(records, "profile").items():
        large = _large_s_estimates(group)
        q = group[0]["num_quadrant_inputs"]
        paper = PAPER_AS_QUOTED["CVAE IS"][q]
        summary[profile] = {
            "seeds": len(group),
            "best_val_loss": _mean_sd(r["curves"]["best_val_loss"] for r in group),
            "epochs": _mean_sd(r["epochs_cvae"] for r in group),
            "is": _mean_sd(r["cvae_nll_is"] for r in group),
            "is_large_s": _mean_sd(large),
            "large_s": _large_s(group[0]),
            "gap_is": mean(r["cvae_nll_is"] for r in group) - paper,
            "gap_is_large_s": mean(large) - paper if large else math.nan,
        }
    return summary


def _large_s(record: dict) -> int | None:
    """The large S of a run's second IS estimate, None where it has none."""
    return record.get("is_large_s", {}).get("sample_sizes", [None])[-1]


def _large_s_estimates(records: Iterable[dict]) -> list[float]:
    """The IS estimate at the large S of each of ``records`` that has one."""
    return [r["is_large_s"]["mean"][-1] for r in records if "is_large_s" in r]


def _mean_sd(values: Iterable[float]) -> tuple[float, float]:
    values = list(values)
    if not values:
        return (math.nan, math.nan)
    return (mean(values), stdev(values) if len(values) > 1 else math.nan)


def chosen_protocol(records: list[dict]) -> str | None:
    """The protocol with the lowest mean best validation loss: chosen on the
    validation split, never on the test set. None while fewer than two protocols
    have runs: a choice needs two."""
    summary = protocol_summary(records)
    if len(summary) < 2:
        return None
    return min(summary, key=lambda name: summary[name]["best_val_loss"][0])


def levers_that_help(records: list[dict], base: str) -> list[str]:
    """The levers whose protocol beat ``base`` (the tutorial's protocol) on the
    validation split by more than the seed spread: mean best validation −ELBO lower
    by more than the larger of the two standard deviations across seeds. Pulled
    together, they make the converged protocol; the test set plays no part."""
    summary = protocol_summary(records)
    if base not in summary:
        return []
    tutorial_mean, tutorial_sd = summary[base]["best_val_loss"]
    helping = []
    for name, s in summary.items():
        levers = split_levers(name.removeprefix(base + "-"))
        if not name.startswith(base + "-") or not levers:
            continue
        mean_loss, sd = s["best_val_loss"]
        # NaN (one seed: no spread to beat) compares False
        if tutorial_mean - mean_loss > larger_sd(tutorial_sd, sd):
            helping += levers
    return helping


def converged_levers(records: list[dict], base: str) -> list[str]:
    """The levers of the converged protocol that the protocol study's ``records``
    give: those that help (:func:`levers_that_help`), else the chosen protocol's;
    empty while neither is known."""
    helping = levers_that_help(records, base)
    if helping:
        return helping
    chosen = chosen_protocol(records)
    if chosen is None or chosen == base:
        return []
    return split_levers(chosen.removeprefix(base + "-")) or []


def protocol_table(records: list[dict]) -> str:
    summary = protocol_summary(records)
    large_s = next(iter(summary.values()))["large_s"] if summary else None
    small_s = records[0]["num_samples"] if records else None
    rows = [
        [
            name,
            s["seeds"],
            f"{s['epochs'][0]:.0f}",
            _mean_pm_sd(s["best_val_loss"]),
            _mean_pm_sd(s["is"]),
            _mean_pm_sd(s["is_large_s"]),
            _nats(s["gap_is"], "+"),
            _nats(s["gap_is_large_s"], "+"),
        ]
        for name, s in summary.items()
    ]
    header = ["protocol", "seeds", "epochs (mean)", "best validation −ELBO",
              f"IS, S = {small_s}", f"IS, S = {large_s}", f"gap to paper, S = {small_s}",
              f"gap to paper, S = {large_s}"]  # fmt: skip
    return markdown_table(header, rows)


def converged_summary(
    records: list[dict], seed_records: list[dict], base: str
) -> dict[int, dict]:
    """Per quadrant setting: the converged protocol's ``records`` against the
    tutorial's protocol (``base``'s runs of the seed study, default decoder) on the same
    seeds. IS at S = 100 paired by seed, with ``verdict``: :func:`spread_verdict` of
    the mean difference against the larger of the two protocols' standard deviations
    across seeds; the converged runs' IS at the large S and its gap to the paper's
    number as quoted, with ``gap_verdict``: that gap against the converged runs' own
    standard deviation across seeds (the paper gives none)."""
    tutorial = {
        (r["num_quadrant_inputs"], r["seed"]): r
        for r in seed_records
        if r["profile"] == base and not r["decoder_sees_input"]
    }
    summary = {}
    for (q,), group in sorted(_group(records, "num_quadrant_inputs").items()):
        paired = sorted(
            (r["seed"], r, tutorial[q, r["seed"]])
            for r in group
            if (q, r["seed"]) in tutorial
        )
        ours, theirs = _mean_sd(r["cvae_nll_is"] for r in group), (math.nan, math.nan)
        diffs: list[float] = []
        if paired:
            theirs = _mean_sd(t["cvae_nll_is"] for _, _, t in paired)
            diffs = [r["cvae_nll_is"] - t["cvae_nll_is"] for _, r, t in paired]
        large = _large_s_estimates(group)
        paper = PAPER_AS_QUOTED["CVAE IS"][q]
        large_mean_sd = _mean_sd(large)
        spread = larger_sd(
            _mean_sd(r["cvae_nll_is"] for _, r, _ in paired)[1], theirs[1]
        )
        summary[q] = {
            "seeds": sorted(r["seed"] for r in group),
            "epochs": _mean_sd(r["epochs_cvae"] for r in group),
            "is": ours,
            "tutorial_is": theirs,
            "paired_seeds": [seed for seed, _, _ in paired],
            "differences": diffs,
            "mean_difference": mean(diffs) if diffs else math.nan,
            "seed_spread": spread,
            "verdict": spread_verdict(mean(diffs) if diffs else math.nan, spread),
            "is_large_s": large_mean_sd,
            "large_s": _large_s(group[0]),
            "gap_is": ours[0] - paper,
            "gap_is_large_s": large_mean_sd[0] - paper,
            "gap_verdict": spread_verdict(large_mean_sd[0] - paper, large_mean_sd[1]),
        }
    return summary


def converged_table(records: list[dict], seed_records: list[dict], base: str) -> str:
    """:func:`converged_summary` as a table, one row per quadrant setting."""
    summary = converged_summary(records, seed_records, base)
    large_s = next(iter(summary.values()))["large_s"] if summary else None
    small_s = records[0]["num_samples"] if records else None
    rows = [
        [
            q,
            len(c["seeds"]),
            f"{c['epochs'][0]:.0f}",
            _mean_pm_sd(c["tutorial_is"]) if c["paired_seeds"] else "–",
            _mean_pm_sd(c["is"]),
            ", ".join(f"{d:+.2f}" for d in c["differences"]) or "–",
            VERDICT_CELLS[c["verdict"]],
            _mean_pm_sd(c["is_large_s"]),
            _nats(c["gap_is_large_s"], "+"),
        ]
        for q, c in summary.items()
    ]
    header = ["quadrants", "seeds", "epochs (mean)", f"tutorial's IS, S = {small_s}",
              f"converged IS, S = {small_s}", "converged − tutorial, per seed",
              "beyond the spread", f"converged IS, S = {large_s}",
              f"gap to paper, S = {large_s}"]  # fmt: skip
    return markdown_table(header, rows)


def paper_table(records: list[dict], converged_records: Iterable[dict] = ()) -> str:
    """The paper's Table 1 as quoted beside the seed study's means (± sd across
    seeds), default decoder and paper's decoder; then the converged protocol's
    (``converged_records``), IS at S = 100 and at the large S, where there are any."""
    spreads = seed_spread(records)
    rows = []
    for row in ("NN", "CVAE IS"):
        rows.append([f"{row}, Sohn et al. (as commonly quoted)",
                     *(f"{PAPER_AS_QUOTED[row][q]:.2f}" for q in QUADRANT_SETTINGS)])  # fmt: skip
        for sees_input in (False, True):
            if row == "NN" and sees_input:
                continue
            cells = []
            for q in QUADRANT_SETTINGS:
                spread = spreads.get((q, sees_input), {}).get(row)
                cells.append(
                    _mean_pm_sd((spread.mean, spread.seed_sd)) if spread else "–"
                )
            label = row if row == "NN" else f"{row}, {decoder_label(sees_input)}"
            rows.append([f"{label}, this book (mean ± sd over seeds)", *cells])
    by_q = _group(converged_records, "num_quadrant_inputs")
    if by_q:
        first = next(iter(by_q.values()))[0]
        large_s = _large_s(first)
        for label, values in (
            (f"S = {first['num_samples']}", lambda g: [r["cvae_nll_is"] for r in g]),
            (f"S = {large_s}", _large_s_estimates),
        ):
            cells = [
                _mean_pm_sd(_mean_sd(values(by_q[(q,)]))) if (q,) in by_q else "–"
                for q in QUADRANT_SETTINGS
            ]
            name = f"CVAE IS, {decoder_label(False)}, converged protocol, {label}"
            rows.append([f"{name} (mean ± sd over seeds)", *cells])
    header = ["negative CLL (nats/image)", *(f"{q} quadrant{'s' * (q > 1)}"
              for q in QUADRANT_SETTINGS)]  # fmt: skip
    return markdown_table(header, rows)


def bf16_against_spread(precision: dict, records: list[dict]) -> dict[int, dict]:
    """Per setting, bf16 − fp32 of the committed precision comparison (one seed each)
    against the seed study's standard deviation of the same estimator and decoder."""
    spreads = seed_spread(records)
    row = next(r for r, key in ESTIMATOR_ROWS.items() if key == precision["estimator"])
    out = {}
    for q_text, setting in precision["settings"].items():
        spread = spreads.get((int(q_text), precision["decoder_sees_input"]), {}).get(
            row
        )
        if spread is not None:
            out[int(q_text)] = {
                "difference": setting["difference"],
                "seed_sd": spread.seed_sd,
                "verdict": spread_verdict(setting["difference"], spread.seed_sd),
            }
    return out


def compute_hours(records: Iterable[dict]) -> dict[str, float]:
    """Hours of training and evaluation per device type (``cpu``, ``cuda``) that the
    studies spent: each model they trained counted once, and each run's evaluation.
    Models reused from the reference (trained by another engine than the run's, in
    the records of the code before 2026-12-04) and records made from the reference (:func:`reference_record`) were paid for by
    `make reference`, not by a study."""
    hours: dict[str, float] = {}
    seen: set = set()
    for record in records:
        run = record["provenance"]
        if "source" in run:
            continue
        trained_with = record["profile_settings"].get("baseline_profile") or {}
        q, seed = record["num_quadrant_inputs"], record["seed"]
        base = (trained_with.get("name", record["profile"]), q, seed)
        cvae = (record["profile"], q, seed, record["decoder_sees_input"])
        seconds = run["eval_seconds"]
        for key, model in ((base, "baseline"), (cvae, "cvae")):
            trainer = record["trained_by"][model]
            if key not in seen and trainer == run.get("engine", trainer):
                seen.add(key)
                seconds += record[f"epoch_seconds_{model}"]
        hours[run["device_type"]] = hours.get(run["device_type"], 0.0) + seconds / 3600
    return hours


def provenance_table(records: list[dict]) -> str:
    """What made the records: commits, the code that trained them (the engine, for
    the records of the code before 2026-12-04), devices, with the runs of each."""

    def fields(record: dict) -> dict:
        run = record["provenance"]
        trained = run.get("engine") or record["trained_by"]["cvae"]
        return {**record, **{f"_{k}": v for k, v in run.items()}, "_trained": trained}

    groups = _group(map(fields, records), "_commit", "_trained", "_device", "_cpu")
    rows = [
        [commit, trained, device, cpu, len(group)]
        for (commit, trained, device, cpu), group in sorted(groups.items())
    ]
    return markdown_table(["commit", "trained by", "device", "cpu", "runs"], rows)


def _run_of(record: dict) -> StudyRun:
    return StudyRun(
        record["profile"],
        record["num_quadrant_inputs"],
        record["decoder_sees_input"],
        record["seed"],
    )


def write_report(results_dir: str | Path, base: Profile) -> Path:
    """``README.md`` in ``results_dir``: the tables of every run found there."""
    results_dir = Path(results_dir)
    found = {name: load_runs(results_dir, study_runs(name, base)) for name in STUDIES}
    seeds, protocols, converged_runs = (found[name] for name in STUDIES)
    everything = {_run_of(r).name: r for runs in found.values() for r in runs}.values()
    counts = ", ".join(
        f"{name} {len(found[name])} of {len(study_runs(name, base))}"
        for name in STUDIES
    )
    parts = [
        "# The seed, protocol and converged studies\n",
        "Written by `python -m cvae_helpers study report` from the run files in this "
        "folder (one JSON per run, with its provenance); see `cvae_helpers/studies.py` "
        "(the runs), `cvae_helpers/study_report.py` (these tables) and chapters 11 "
        "and 12.\n",
        f"Runs found: {counts}.\n",
    ]
    if seeds:
        parts += ["## Seed spread\n", seed_spread_table(seeds)]
        parts += ["## The two decoders, paired by seed\n", decoder_table(seeds)]
        parts += ["## The paper's Table 1, as commonly quoted\n",
                  paper_table(seeds, converged_runs)]  # fmt: skip
    if protocols:
        parts += ["## Protocols, 1 quadrant, p(y|z)\n", protocol_table(protocols)]
        chosen = chosen_protocol(protocols)
        if chosen:
            parts.append(f"Chosen on the validation split: `{chosen}`.\n")
        helping = levers_that_help(protocols, base.name)
        parts.append(
            "Levers beyond the seed spread on the validation split: "
            f"{', '.join(f'`{lever}`' for lever in helping) or 'none'}.\n"
        )
    if converged_runs:
        parts += [f"## The converged protocol (`{converged(base).name}`), p(y|z)\n",
                  converged_table(converged_runs, seeds, base.name)]  # fmt: skip
    if everything:
        hours = compute_hours(everything)
        spent = ", ".join(f"{kind}: {h:.1f} h" for kind, h in sorted(hours.items()))
        parts += ["## Provenance\n", provenance_table(list(everything)),
                  f"Compute spent (training once per model, and evaluation): {spent}.\n"]  # fmt: skip
    path = results_dir / "README.md"
    # one blank line between blocks, whatever ends each
    path.write_text("\n\n".join(part.strip() for part in parts) + "\n")
    return path
