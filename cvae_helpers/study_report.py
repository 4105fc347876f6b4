"""What the studies' records (:mod:`cvae_helpers.studies`) tell: means with confidence
intervals, differences paired by seed, equivalence tests against the paper, and the
tables of :func:`write_report`. Runs of another host are never pooled with the seeds."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from scipy import stats

from .config import DECODERS, Profile, converged, split_levers
from .results import QUADRANT_SETTINGS, markdown_table, quadrant_header
from .studies import STUDIES, StudyRun, host_of, load_runs, study_runs

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
PAPER_AS_QUOTED["NN − CVAE"] = {
    q: nn - PAPER_AS_QUOTED["CVAE IS"][q] for q, nn in PAPER_AS_QUOTED["NN"].items()
}
CONFIDENCE = 0.95  # the level of every interval; 1 − it is the level of every test
ALPHA = 1 - CONFIDENCE
# A gap to the paper's number smaller than this, in nats per image, is a match: the
# margin of the two one-sided tests, fixed before the converged runs were trained
# (chapter 12 says why this size).
EQUIVALENCE_MARGIN = 0.5
MAX_SEEDS = 100  # "how many seeds would decide it" is searched up to this many


def _t(level: float, n: int) -> float:
    """The ``level`` quantile of Student's t with ``n - 1`` degrees of freedom."""
    return float(stats.t.ppf(level, n - 1))


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds (or paired differences) with its t-based confidence
    interval, mean ± t(0.975, n − 1) · sd / √n; one value: sd and CI are NaN."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return mean(self.values) if self.values else math.nan

    @property
    def sd(self) -> float:
        """The standard deviation across seeds (n − 1 in the denominator)."""
        if self.n < 2:
            return math.nan
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (self.n - 1))

    @property
    def stderr(self) -> float:
        return self.sd / math.sqrt(self.n) if self.n > 1 else math.nan

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        if self.n < 2:
            return (math.nan, math.nan)
        half = _t(1 - (1 - confidence) / 2, self.n) * self.stderr
        return (self.mean - half, self.mean + half)

    def p_value(self, null: float = 0.0) -> float:
        """Two-sided one-sample t-test of mean = ``null`` (a paired t-test when
        the values are paired differences)."""
        if self.n < 2:
            return math.nan
        if self.sd == 0:
            return 0.0 if self.mean != null else 1.0
        t = (self.mean - null) / self.stderr
        return float(2 * stats.t.sf(abs(t), self.n - 1))


def seeds_to_decide(mean_value: float, sd: float, n: int, level: float) -> int | None:
    """The fewest seeds, more than ``n``, whose t-interval at ``level`` (one-sided
    quantile) would be narrower than ``|mean_value|`` were the mean and sd to stay as
    measured: a planning figure. None without a spread; past reach: MAX_SEEDS + 1."""
    if math.isnan(sd) or n < 2:
        return None
    for m in range(max(n + 1, 2), MAX_SEEDS + 1):
        if _t(level, m) * sd / math.sqrt(m) < abs(mean_value):
            return m
    return MAX_SEEDS + 1


def _seeds_text(seeds: int | None) -> str:
    if seeds is None:
        return "undecided (one seed: no spread yet)"
    if seeds > MAX_SEEDS:
        return f"undecided (more than {MAX_SEEDS} seeds would be needed)"
    return f"undecided ({seeds} seeds would decide it)"


@dataclass(frozen=True)
class Paired:
    """Two settings run with the same seeds: the per-seed differences, their
    mean and CI, and a paired t-test (Student 1908). ``"differs"`` where p <
    0.05, else ``"undecided"``: a difference not found is not ruled out."""

    seeds: tuple[int, ...]
    differences: tuple[float, ...]

    @classmethod
    def of(cls, pairs: dict[int, tuple[float, float]]) -> Paired:
        """``pairs``: per seed, (this, that); the differences are
        this − that."""
        seeds = tuple(sorted(pairs))
        return cls(seeds, tuple(pairs[s][0] - pairs[s][1] for s in seeds))

    @property
    def estimate(self) -> Estimate:
        return Estimate(self.differences)

    @property
    def p_value(self) -> float:
        return self.estimate.p_value()

    @property
    def verdict(self) -> str:
        return "differs" if self.p_value < ALPHA else "undecided"

    @property
    def seeds_to_decide(self) -> int | None:
        e = self.estimate
        if self.verdict == "differs":
            return e.n
        return seeds_to_decide(e.mean, e.sd, e.n, 1 - ALPHA / 2)

    def decision(self) -> str:
        """The verdict in words; an undecided one says what would decide it."""
        if self.verdict == "differs":
            return "differs"
        return _seeds_text(self.seeds_to_decide)


@dataclass(frozen=True)
class Equivalence:
    """Our seeds against a fixed reference number (the paper's, as quoted): the
    gap's mean and CI, its t-test, and two one-sided t-tests (TOST, Schuirmann
    1987) of −margin < gap < margin: ``"equivalent"`` where TOST p < 0.05;
    ``"beyond the margin"`` where the gap's 90% CI lies wholly outside it."""

    values: tuple[float, ...]
    reference: float
    margin: float = EQUIVALENCE_MARGIN

    @property
    def gap(self) -> Estimate:
        return Estimate(tuple(v - self.reference for v in self.values))

    @property
    def p_tost(self) -> float:
        g = self.gap
        if g.n < 2:
            return math.nan
        if g.sd == 0:
            return 0.0 if abs(g.mean) < self.margin else 1.0
        lower = stats.t.sf((g.mean + self.margin) / g.stderr, g.n - 1)
        upper = stats.t.cdf((g.mean - self.margin) / g.stderr, g.n - 1)
        return float(max(lower, upper))

    @property
    def verdict(self) -> str:
        g = self.gap
        if g.n < 2:
            return "undecided"
        if self.p_tost < ALPHA:
            return "equivalent"
        low, high = g.interval(1 - 2 * ALPHA)
        if low > self.margin or high < -self.margin:
            return "beyond the margin"
        return "undecided"

    @property
    def seeds_to_decide(self) -> int | None:
        g = self.gap
        if self.verdict != "undecided":
            return g.n
        distance = abs(g.mean) - self.margin
        return seeds_to_decide(distance, g.sd, g.n, 1 - ALPHA)

    def decision(self) -> str:
        if self.verdict == "equivalent":
            return f"matches (within ±{self.margin:.1f})"
        if self.verdict == "beyond the margin":
            side = "above" if self.gap.mean > 0 else "below"
            return f"differs ({side}, beyond ±{self.margin:.1f})"
        return _seeds_text(self.seeds_to_decide)


def _nats(value: float, sign: str = "") -> str:
    return "–" if math.isnan(value) else f"{value:{sign}.2f}"


def _p(value: float) -> str:
    if math.isnan(value):
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def ci_cell(estimate: Estimate, sign: str = "") -> str:
    """``mean [low, high]`` (95% CI); one value: ``mean (one seed)``; none: ``–``."""
    if estimate.n == 0:
        return "–"
    if estimate.n == 1:
        return f"{estimate.mean:{sign}.2f} (one seed)"
    low, high = estimate.interval()
    return f"{estimate.mean:{sign}.2f} [{low:{sign}.2f}, {high:{sign}.2f}]"


def _paired_cells(c: Paired) -> list[str]:
    """Per-seed differences, mean [95% CI], paired t-test p, verdict."""
    per_seed = ", ".join(f"{d:+.2f}" for d in c.differences) or "–"
    return [per_seed, ci_cell(c.estimate, "+"), _p(c.p_value), c.decision()]


def _decoder(sees_input: bool) -> str:
    return DECODERS[sees_input].label


def _group(records: Iterable[dict], *fields: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault(tuple(record[f] for f in fields), []).append(record)
    return groups


_RUN = ("profile", "num_quadrant_inputs", "decoder_sees_input", "seed")


def _by_seed(records: Iterable[dict]) -> dict[tuple, dict]:
    return {tuple(r[field] for field in _RUN): r for r in records}


def _large_s(record: dict) -> int | None:
    """The large S of a run's second IS estimate, None where it has none."""
    return record.get("is_large_s", {}).get("sample_sizes", [None])[-1]


def _large_s_estimates(records: Iterable[dict]) -> list[float]:
    """The IS estimate at the large S of each of ``records`` that has one."""
    return [r["is_large_s"]["mean"][-1] for r in records if "is_large_s" in r]


def home(records: Iterable[dict]) -> list[dict]:
    """The records of the project's machine (other hosts': :func:`host_comparisons`)."""
    return [r for r in records if not host_of(r)]


@dataclass(frozen=True)
class Spread(Estimate):
    """One estimator over seeds (:class:`Estimate`) and its mean test-set s.e."""

    test_stderr: float = math.nan

    @classmethod
    def of(cls, records: list[dict], key: str) -> Spread:
        stderr = mean(r[f"{key}_stderr"] for r in records)
        return cls(tuple(r[key] for r in records), stderr)


def seed_spread(records: list[dict]) -> dict[tuple[int, bool], dict[str, Spread]]:
    """Per (quadrants, decoder_sees_input): each estimator's :class:`Spread` over the
    seeds of the project's machine."""
    groups = _group(home(records), "num_quadrant_inputs", "decoder_sees_input")
    return {
        key: {row: Spread.of(group, field) for row, field in ESTIMATOR_ROWS.items()}
        for key, group in sorted(groups.items())
    }


def seed_spread_table(records: list[dict]) -> str:
    """Per setting, decoder and estimator: mean [95% CI], sd and mean test s.e."""
    rows = [
        [q, _decoder(sees), row, s.n, ci_cell(s), _nats(s.sd), f"{s.test_stderr:.2f}"]
        for (q, sees), spreads in seed_spread(records).items()
        for row, s in spreads.items()
    ]
    header = ["quadrants", "decoder", "estimator", "seeds", "mean [95% CI]",
              "sd across seeds", "mean test s.e."]  # fmt: skip
    return markdown_table(header, rows)


def decoder_differences(records: list[dict]) -> dict[tuple[int, str], Paired]:
    """Per (quadrants, estimator): p(y|x,z) − p(y|z) of one protocol's runs, paired
    by seed (the seeds both decoders have; both share each seed's baseline); IS at
    the large S too, where both runs of a seed have it."""
    by_key = _by_seed(home(records))
    comparison = {}
    for q in sorted({key[1] for key in by_key}):
        both = {
            seed: (r, by_key[profile, q, False, seed])
            for (profile, qq, sees, seed), r in by_key.items()
            if qq == q and sees and (profile, q, False, seed) in by_key
        }
        if not both:
            continue
        for row, field in list(ESTIMATOR_ROWS.items())[1:]:  # NN: one baseline
            pairs = {seed: (a[field], b[field]) for seed, (a, b) in both.items()}
            comparison[q, row] = Paired.of(pairs)
        large = {
            seed: tuple(_large_s_estimates(pair))
            for seed, pair in both.items()
            if all("is_large_s" in r for r in pair)
        }
        if large:
            s = _large_s(both[min(large)][0])
            comparison[q, f"CVAE IS, S = {s}"] = Paired.of(large)
    return comparison


def paired_table(comparisons: dict, labels: Sequence[str], what: str) -> str:
    """{key tuple: :class:`Paired`} as rows: the key (columns ``labels``), seeds, the
    per-seed differences (``what``), mean [95% CI], paired t-test p and verdict."""
    rows = [[*key, len(c.seeds), *_paired_cells(c)] for key, c in comparisons.items()]
    header = [*labels, "seeds", f"{what}, per seed", "mean [95% CI]",
              "paired t-test p", "verdict"]  # fmt: skip
    return markdown_table(header, rows)


def decoder_table(records: list[dict]) -> str:
    """:func:`decoder_differences` as a table."""
    return paired_table(
        decoder_differences(records), ["quadrants", "estimator"], "p(y|x,z) − p(y|z)"
    )


def stopping_epochs(records: list[dict]) -> dict[tuple[int, bool], dict]:
    """Per (quadrants, decoder_sees_input) of the tutorial protocol's seed study: each
    seed's stopping epoch and IS estimate, sorted by epoch, the r² and slope of a least
    squares line in the epoch, and Spearman's rank correlation."""
    out = {}
    groups = _group(home(records), "num_quadrant_inputs", "decoder_sees_input")
    for key, group in sorted(groups.items()):
        points = sorted((r["epochs_cvae"], r["cvae_nll_is"], r["seed"]) for r in group)
        epochs, values, seeds = (list(column) for column in zip(*points, strict=True))
        varies = len(set(epochs)) > 1 and len(set(values)) > 1
        fit = stats.linregress(epochs, values) if len(points) > 2 and varies else None
        rho = stats.spearmanr(epochs, values).statistic if fit else math.nan
        out[key] = {
            "epochs": epochs,
            "is": values,
            "seeds": seeds,
            "r_squared": fit.rvalue**2 if fit else math.nan,
            "slope": fit.slope if fit else math.nan,
            "spearman": float(rho),
        }
    return out


def protocol_summary(records: list[dict]) -> dict[str, dict]:
    """Per protocol (profile), in the study's order: the seeds' best validation
    −ELBO, epochs, IS at S = 100 and at the large S, each an :class:`Estimate`."""
    summary = {}
    for (profile,), group in _group(home(records), "profile").items():
        best = tuple(r["curves"]["best_val_loss"] for r in group)
        summary[profile] = {
            "seeds": len(group),
            "best_val_loss": Estimate(best),
            "epochs": Estimate(tuple(r["epochs_cvae"] for r in group)),
            "is": Estimate(tuple(r["cvae_nll_is"] for r in group)),
            "is_large_s": Estimate(tuple(_large_s_estimates(group))),
            "large_s": _large_s(group[0]),
        }
    return summary


def protocol_table(records: list[dict]) -> str:
    """:func:`protocol_summary` as a table, one row per protocol."""
    summary = protocol_summary(records)
    large_s = next(iter(summary.values()))["large_s"] if summary else None
    small_s = records[0]["num_samples"] if records else None
    rows = [
        [name, s["seeds"], f"{s['epochs'].mean:.0f}", ci_cell(s["best_val_loss"])]
        + [ci_cell(s["is"]), ci_cell(s["is_large_s"])]
        for name, s in summary.items()
    ]
    header = ["protocol", "seeds", "epochs (mean)",
              "best validation −ELBO [95% CI]", f"IS, S = {small_s} [95% CI]",
              f"IS, S = {large_s} [95% CI]"]  # fmt: skip
    return markdown_table(header, rows)


def lever_comparisons(records: list[dict], base: str) -> dict[str, dict[str, Paired]]:
    """Per protocol with levers: it − ``base`` (the tutorial's protocol), paired by
    seed, on the best validation −ELBO (what the choice is made on) and on the IS
    estimate at the large S (read only)."""
    by_key = _by_seed(home(records))
    out = {}
    for profile in dict.fromkeys(key[0] for key in by_key):
        if not profile.startswith(base + "-"):
            continue
        pairs = [
            (k[3], r, by_key[(base, *k[1:])])
            for k, r in by_key.items()
            if k[0] == profile and (base, *k[1:]) in by_key
        ]
        validation = {
            s: (r["curves"]["best_val_loss"], t["curves"]["best_val_loss"])
            for s, r, t in pairs
        }
        large_s = {
            s: (r["is_large_s"]["mean"][-1], t["is_large_s"]["mean"][-1])
            for s, r, t in pairs
            if "is_large_s" in r and "is_large_s" in t
        }
        out[profile] = {
            "validation": Paired.of(validation),
            "is_large_s": Paired.of(large_s),
        }
    return out


def lever_table(records: list[dict], base: str) -> str:
    """:func:`lever_comparisons` as a table, validation then test."""
    s = _large_s(records[0]) if records else None
    measures = {"validation": "validation −ELBO", "is_large_s": f"test IS, S = {s}"}
    rows = {
        (name, measure): c[key]
        for name, c in lever_comparisons(records, base).items()
        for key, measure in measures.items()
        if c[key].seeds
    }
    return paired_table(rows, ["protocol", "measure"], f"protocol − {base}")


def chosen_protocol(records: list[dict]) -> str | None:
    """The protocol with the lowest mean best validation loss: chosen on the
    validation split, never on the test set. None while fewer than two protocols
    have runs: a choice needs two."""
    summary = protocol_summary(records)
    if len(summary) < 2:
        return None
    return min(summary, key=lambda name: summary[name]["best_val_loss"].mean)


def levers_that_help(records: list[dict], base: str) -> list[str]:
    """The levers whose protocol beat ``base`` (the tutorial's) on validation: a
    lower best validation −ELBO, paired t-test at the 5% level. Pulled together,
    they make the converged protocol; the test set plays no part."""
    helping = []
    for name, c in lever_comparisons(records, base).items():
        levers = split_levers(name.removeprefix(base + "-"))
        validation = c["validation"]
        won = validation.verdict == "differs" and validation.estimate.mean < 0
        if levers and won:
            helping += levers
    return helping


def converged_levers(records: list[dict], base: str) -> list[str]:
    """The converged protocol's levers that the protocol study's ``records`` give:
    those that help (:func:`levers_that_help`), else the chosen protocol's; empty
    while neither is known."""
    helping, chosen = levers_that_help(records, base), chosen_protocol(records)
    if helping or chosen is None or chosen == base:
        return helping
    return split_levers(chosen.removeprefix(base + "-")) or []


def converged_summary(
    records: list[dict], seed_records: list[dict], base: str
) -> dict[tuple[int, bool], dict]:
    """Per (quadrants, decoder_sees_input): the converged protocol's runs, IS at
    S = 100 and at the large S, the asymptote step's rows, and IS at S = 100
    against the tutorial protocol's (``base``'s seed study), paired by seed."""
    tutorial = {
        key[1:]: r["cvae_nll_is"]  # by (quadrants, decoder_sees_input, seed)
        for key, r in _by_seed(home(seed_records)).items()
        if key[0] == base
    }
    summary = {}
    groups = _group(home(records), "num_quadrant_inputs", "decoder_sees_input")
    for (q, sees), group in sorted(groups.items()):
        pairs = {
            r["seed"]: (r["cvae_nll_is"], tutorial[q, sees, r["seed"]])
            for r in group
            if (q, sees, r["seed"]) in tutorial
        }
        summary[q, sees] = {
            "seeds": sorted(r["seed"] for r in group),
            "epochs": Estimate(tuple(r["epochs_cvae"] for r in group)),
            "is": Estimate(tuple(r["cvae_nll_is"] for r in group)),
            "is_large_s": Estimate(tuple(_large_s_estimates(group))),
            "large_s": _large_s(group[0]),
            "asymptote": asymptote_rows(group),
            "against_tutorial": Paired.of(pairs),
        }
    return summary


def converged_table(
    records: list[dict],
    seed_records: list[dict],
    base: str,
    planned: Iterable[StudyRun] = (),
) -> str:
    """:func:`converged_summary` as a table, one row per setting and decoder, and one
    per setting and decoder of the ``planned`` runs that has none in yet."""
    summary = converged_summary(records, seed_records, base)
    per_cell = Counter((r.num_quadrant_inputs, r.decoder_sees_input) for r in planned)
    large_s = next(iter(summary.values()))["large_s"] if summary else None
    small_s = records[0]["num_samples"] if records else None
    rows = [
        [q, _decoder(sees), len(c["seeds"]), f"{c['epochs'].mean:.0f}"]
        + [ci_cell(c["is"]), ci_cell(c["is_large_s"])]
        + _paired_cells(c["against_tutorial"])
        for (q, sees), c in summary.items()
    ]
    rows += [
        [q, _decoder(sees), f"0 of {n}", *["–"] * 6, "undecided (no runs in yet)"]
        for (q, sees), n in sorted(per_cell.items())
        if (q, sees) not in summary
    ]
    rows.sort(key=lambda row: (row[0], row[1] != _decoder(False)))
    header = ["quadrants", "decoder", "seeds", "epochs (mean)",
              f"IS, S = {small_s} [95% CI]", f"IS, S = {large_s} [95% CI]",
              f"converged − tutorial, S = {small_s}, per seed", "mean [95% CI]",
              "paired t-test p", "verdict"]  # fmt: skip
    return markdown_table(header, rows)


def asymptote_rows(records: Iterable[dict]) -> list[dict]:
    """The runs with the asymptote step: per run, its IS at S = 100, at the large S
    and at the asymptote's S (5,000 at the full budget), all on the whole test set."""
    rows = [
        {
            "quadrants": r["num_quadrant_inputs"],
            "decoder_sees_input": r["decoder_sees_input"],
            "seed": r["seed"],
            "host": host_of(r),
            "is": r["cvae_nll_is"],
            "is_large_s": r["is_large_s"]["mean"][-1]
            if "is_large_s" in r
            else math.nan,
            "is_asymptote": r["is_asymptote"]["mean"][-1],
            "asymptote_stderr": r["is_asymptote"]["stderr"][-1],
            "asymptote_s": r["is_asymptote"]["sample_sizes"][-1],
        }
        for r in records
        if "is_asymptote" in r
    ]
    return sorted(rows, key=lambda row: (row["quadrants"], row["decoder_sees_input"]))


def asymptote_table(records: list[dict], planned: int) -> str:
    """:func:`asymptote_rows` as a table, or a line that says none is in yet."""
    rows = asymptote_rows(records)
    if not rows:
        return f"None of the {planned} runs of the asymptote step is in yet."
    large_s, s = _large_s(records[0]), rows[0]["asymptote_s"]
    table = [
        [r["quadrants"], _decoder(r["decoder_sees_input"]), r["seed"]]
        + [r["host"] or "this project's", f"{r['is']:.2f}", _nats(r["is_large_s"])]
        + [f"{r['is_asymptote']:.2f} ± {r['asymptote_stderr']:.2f}"]
        + [_nats(r["is_asymptote"] - r["is_large_s"], "+")]
        for r in rows
    ]
    header = ["quadrants", "decoder", "seed", "host", "IS, S = 100",
              f"IS, S = {large_s}", f"IS, S = {s} (± test s.e.)",
              f"S = {s} − S = {large_s}"]  # fmt: skip
    return markdown_table(header, table)


def paper_rows() -> list[tuple[str, str]]:
    """The rows of our side of the paper's Table 1, in order: (name, the paper's row
    it stands beside: ``NN``, ``CVAE IS`` or ``NN − CVAE``)."""
    rows = [("NN", "NN")]
    for protocol in ("tutorial", "converged"):
        rows += [(f"CVAE IS, {_decoder(sees)}, {protocol}", "CVAE IS")
                 for sees in (False, True)]  # fmt: skip
    rows += [(f"NN − CVAE IS, {_decoder(sees)}, converged", "NN − CVAE")
             for sees in (False, True)]  # fmt: skip
    return rows


def paper_comparisons(
    seed_records: list[dict], converged_records: Iterable[dict]
) -> dict[tuple[int, str], Equivalence]:
    """Per (quadrants, name of :func:`paper_rows`), our seeds against the paper's
    number (:class:`Equivalence`); NN − CVAE, of the converged runs at the large S,
    cancels whatever shifts both models of a set-up."""
    seeds = _group(home(seed_records), "num_quadrant_inputs", "decoder_sees_input")
    conv = _group(home(converged_records), "num_quadrant_inputs", "decoder_sees_input")
    out = {}
    for q in QUADRANT_SETTINGS:
        values: dict[str, tuple[float, ...]] = {}
        if (q, False) in seeds:
            values["NN"] = tuple(r["baseline_nll"] for r in seeds[q, False])
        for sees in (False, True):
            label = _decoder(sees)
            if (q, sees) in seeds:
                values[f"CVAE IS, {label}, tutorial"] = tuple(
                    r["cvae_nll_is"] for r in seeds[q, sees]
                )
            group = [r for r in conv.get((q, sees), []) if "is_large_s" in r]
            if group:
                large = _large_s_estimates(group)
                values[f"CVAE IS, {label}, converged"] = tuple(large)
                values[f"NN − CVAE IS, {label}, converged"] = tuple(
                    r["baseline_nll"] - v for r, v in zip(group, large, strict=True)
                )
        for name, row in paper_rows():
            if name in values:
                out[q, name] = Equivalence(values[name], PAPER_AS_QUOTED[row][q])
    return out


def paper_table(
    seed_records: list[dict], converged_records: Iterable[dict] = ()
) -> str:
    """The paper's Table 1 as quoted beside our means [95% CI]: the baseline, the
    CVAE's IS for each decoder and protocol, and the NN − CVAE gap."""
    converged_records = list(converged_records)
    comparisons = paper_comparisons(seed_records, converged_records)
    large_s = next((_large_s(r) for r in converged_records if "is_large_s" in r), None)
    rows, shown = [], set()
    for name, row in paper_rows():
        found = [comparisons.get((q, name)) for q in QUADRANT_SETTINGS]
        # the converged protocol's rows stand once any of its runs is in, empty or not
        planned = "converged" in name and bool(converged_records)
        if not planned and not any(found):
            continue
        if row not in shown:
            shown.add(row)
            quoted = [f"{PAPER_AS_QUOTED[row][q]:.2f}" for q in QUADRANT_SETTINGS]
            rows.append([f"{row}, Sohn et al. (as commonly quoted)", *quoted])
        cells = [ci_cell(Estimate(c.values)) if c else "–" for c in found]
        s = "" if name == "NN" else f", S = {large_s if 'converged' in name else 100}"
        rows.append([f"{name}{s}, this book", *cells])
    header = quadrant_header("negative CLL (nats/image), mean [95% CI]")
    return markdown_table(header, rows)


def equivalence_table(
    seed_records: list[dict], converged_records: Iterable[dict] = ()
) -> str:
    """:func:`paper_comparisons` as a table: the gap to the paper's number, its 95%
    CI, the t-test of a zero gap, the TOST p and the verdict."""
    comparisons = paper_comparisons(seed_records, list(converged_records))
    rows = [
        [q, name, c.gap.n, ci_cell(c.gap, "+"), _p(c.gap.p_value()), _p(c.p_tost)]
        + [c.decision()]
        for (q, name), c in comparisons.items()  # in the order of paper_rows
    ]
    header = ["quadrants", "ours", "seeds", "ours − paper [95% CI]",
              "t-test p (gap = 0)", f"TOST p (±{EQUIVALENCE_MARGIN})",
              "verdict"]  # fmt: skip
    return markdown_table(header, rows)


def bf16_paired(precision: dict, records: list[dict]) -> dict[int, dict]:
    """Per setting, bf16 − fp32 of the precision comparison: one seed, no test, and
    the seeds that would decide it were the per-seed spread that of two independent
    runs (√2 × the seed study's sd)."""
    spreads = seed_spread(records)
    row = next(r for r, key in ESTIMATOR_ROWS.items() if key == precision["estimator"])
    out = {}
    for q_text, setting in precision["settings"].items():
        cell = (int(q_text), precision["decoder_sees_input"])
        spread = spreads.get(cell, {}).get(row)
        if spread is None:
            continue
        difference, sd = setting["difference"], math.sqrt(2) * spread.sd
        out[int(q_text)] = {
            "paired": Paired((0,), (difference,)),
            "difference": difference,
            "seed_sd": spread.sd,
            "seeds_to_decide": seeds_to_decide(difference, sd, 2, 1 - ALPHA / 2),
        }
    return out


def host_comparisons(records: list[dict]) -> dict[tuple, dict]:
    """Runs made on another host, per (protocol, quadrants, decoder, host), against
    the project's machine: each host's IS at S = 100 (:class:`Estimate`), their
    difference paired by seed, and Welch's t-test of the two means (Welch 1947)."""
    fields = ("profile", "num_quadrant_inputs", "decoder_sees_input")
    ours = _group(home(records), *fields)
    others = ({**r, "_host": host_of(r)} for r in records if host_of(r))
    out = {}
    for (*setting, host), group in sorted(_group(others, *fields, "_host").items()):
        here = {r["seed"]: r["cvae_nll_is"] for r in ours.get(tuple(setting), [])}
        there = {r["seed"]: r["cvae_nll_is"] for r in group}
        welch = math.nan
        if len(here) > 1 and len(there) > 1:
            welch = stats.ttest_ind(
                list(there.values()), list(here.values()), equal_var=False
            ).pvalue
        out[(*setting, host)] = {
            "host": Estimate(tuple(there.values())),
            "home": Estimate(tuple(here.values())),
            "paired": Paired.of({s: (there[s], here[s]) for s in here.keys() & there}),
            "welch_p": float(welch),
        }
    return out


def host_table(records: list[dict]) -> str:
    """:func:`host_comparisons` as a table: the paired test where two seeds or more
    are shared, else Welch's."""
    rows = []
    for (profile, q, sees, host), c in host_comparisons(records).items():
        paired, welch = c["paired"], c["welch_p"]
        if len(paired.seeds) > 1:
            p, verdict = _p(paired.p_value), paired.decision()
        else:  # Welch's test of the two means
            p, verdict = _p(welch), "differs" if welch < ALPHA else "undecided"
        cells = [ci_cell(c["host"]), ci_cell(c["home"]), ci_cell(paired.estimate, "+")]
        rows.append([profile, q, _decoder(sees), host, *cells, p, verdict])
    header = ["protocol", "quadrants", "decoder", "host", "IS there [95% CI]",
              "IS on this project's machine [95% CI]",
              "there − here, paired by seed [95% CI]", "p (paired, else Welch)",
              "verdict"]  # fmt: skip
    return markdown_table(header, rows)


def compute_hours(records: Iterable[dict]) -> dict[str, float]:
    """Hours the studies spent per device type: each model trained once, each
    evaluation and each asymptote step. Models (trained by another engine than the
    run's) and records reused from the reference were paid for by `make reference`."""
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
        step = record.get("is_asymptote", {}).get("provenance")
        if step:
            kind = step["device_type"]
            hours[kind] = hours.get(kind, 0.0) + step["wall_seconds"] / 3600
    return hours


def provenance_table(records: list[dict]) -> str:
    """What made the records, with the runs of each: commits, the code that trained
    them (the engine, for the records of the code before 2026-12-04), hosts, devices."""
    runs: Counter = Counter()
    for record in records:
        run = record["provenance"]
        trained = run.get("engine") or record["trained_by"]["cvae"]
        host = host_of(record) or "this project's"
        runs[run["commit"], trained, host, run["device"], run["cpu"]] += 1
    rows = [[*key, n] for key, n in sorted(runs.items())]
    header = ["commit", "trained by", "host", "device", "cpu", "runs"]
    return markdown_table(header, rows)


def write_report(results_dir: str | Path, base: Profile) -> Path:
    """``README.md`` in ``results_dir``: the tables of every run found there."""
    results_dir = Path(results_dir)
    hosts = {p.stem.rpartition("_host-")[2] for p in results_dir.glob("*_host-*.json")}
    found: dict[str, list[dict]] = {name: [] for name in STUDIES}
    for host in ["", *sorted(hosts)]:  # the project's machine's records first
        for name in STUDIES:
            found[name] += load_runs(results_dir, study_runs(name, base, host))
    seeds, protocols, converged_runs = (found[name] for name in STUDIES[:3])
    # one record per run (the studies share runs), in the order found
    runs = {(*(r[f] for f in _RUN), host_of(r)): r for rs in found.values() for r in rs}
    everything = list(runs.values())

    def count(name: str) -> str:
        planned = study_runs(name, base)
        done = sum(run.done(results_dir) for run in planned)
        return f"{name} {done} of {len(planned)}"

    parts = [
        "# The seed, protocol and converged studies\n",
        "Written by `python -m cvae_helpers study report` from the run files in this "
        "folder (one JSON per run, with its provenance); see `cvae_helpers/studies.py` "
        "(the runs), `cvae_helpers/study_report.py` (these tables) and chapters 11 "
        "and 12.\n",
        f"Runs found on this project's machine: {', '.join(map(count, STUDIES))}.\n",
        f"Every mean carries a t-based {CONFIDENCE:.0%} confidence interval; "
        "differences are paired by seed (paired t-test); against the paper, two "
        f"one-sided t-tests with a margin of ±{EQUIVALENCE_MARGIN} nats, fixed before "
        'the numbers. "Undecided" says how many seeds would decide, were the mean '
        "and the spread to stay as measured. Runs of other hosts are kept apart.\n",
    ]
    if seeds:
        parts += ["## Seed spread, the tutorial's protocol\n", seed_spread_table(seeds)]
        parts += ["## The two decoders, paired by seed\n", decoder_table(seeds)]
    if protocols:
        parts += ["## Protocols, 1 quadrant, p(y|z)\n", protocol_table(protocols),
                  "### Each lever against the tutorial's protocol, paired by seed\n",
                  lever_table(protocols, base.name)]  # fmt: skip
        chosen = chosen_protocol(protocols)
        if chosen:
            helping = levers_that_help(protocols, base.name)
            named = ", ".join(f"`{lever}`" for lever in helping) or "none"
            parts.append(
                f"Lowest mean validation loss: `{chosen}`. Levers that beat the "
                f"tutorial's protocol on the validation split (paired t-test, p < "
                f"0.05): {named}.\n"
            )
    if converged_runs:
        s = max(base.evaluation.curve_sample_sizes)
        parts += [f"## The converged protocol (`{converged(base).name}`)\n",
                  converged_table(converged_runs, seeds, base.name,
                                  study_runs("converged", base)),
                  f"### IS at S = {s} on the whole test set\n",
                  asymptote_table(converged_runs,
                                  len(study_runs("asymptote", base))),
                  "### The two decoders, converged, paired by seed\n",
                  decoder_table(converged_runs)]  # fmt: skip
    if seeds:
        parts += ["## The paper's Table 1, as commonly quoted\n",
                  paper_table(seeds, converged_runs),
                  "### Equivalence with the paper's numbers\n",
                  equivalence_table(seeds, converged_runs)]  # fmt: skip
    if any(host_of(r) for r in everything):
        parts += ["## Runs of other hosts, a factor of their own\n",
                  host_table(everything)]  # fmt: skip
    if everything:
        hours = compute_hours(everything)
        spent = ", ".join(f"{kind}: {h:.1f} h" for kind, h in sorted(hours.items()))
        parts += ["## Provenance\n", provenance_table(everything),
                  f"Compute spent (training once per model, evaluation and the asymptote steps): {spent}.\n"]  # fmt: skip
    path = results_dir / "README.md"
    # one blank line between blocks, whatever ends each
    path.write_text("\n\n".join(part.strip() for part in parts) + "\n")
    return path
