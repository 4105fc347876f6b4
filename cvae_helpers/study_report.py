"""What the studies tell: their runs' records (:mod:`cvae_helpers.studies`) read as
means with confidence intervals, paired differences, equivalence tests and tables.

A mean over seeds carries a t-based 95% confidence interval (:class:`Estimate`). Two
settings run with the same seeds are compared seed by seed: the mean of the paired
differences, its interval and a paired t-test (:class:`Paired`). That a difference is
not found does not make two things equal: a match with the paper's number is a claim
of equivalence, tested with two one-sided t-tests against a margin fixed before the
numbers (:data:`EQUIVALENCE_MARGIN`, :class:`Equivalence`). Where the seeds are too
few to decide, the verdict is "undecided", with the number of seeds that would decide
it if the mean and the spread stayed as measured. Runs made on another host are a
factor of their own, never pooled with the seeds (:func:`host_comparisons`).
Protocols are chosen on the validation split, never on the test set
(:func:`chosen_protocol`, :func:`levers_that_help`). :func:`write_report` writes
every table of a folder of runs into its ``README.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from scipy import stats

from .config import DECODERS, Profile, converged, split_levers
from .results import QUADRANT_SETTINGS, markdown_table
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
# The level of every interval, and 1 − it the level of every test.
CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
# A gap to the paper's number smaller than this, in nats per image, is a match. Fixed
# before the converged runs of both decoders were trained (chapter 12 says why this
# size): the equivalence margin of the two one-sided tests.
EQUIVALENCE_MARGIN = 0.5
# "How many seeds would decide it" is searched up to this many.
MAX_SEEDS = 100


def _t(level: float, n: int) -> float:
    """The ``level`` quantile of Student's t with ``n - 1`` degrees of freedom."""
    return float(stats.t.ppf(level, n - 1))


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds (or over paired differences) with its t-based
    confidence interval: mean ± t(0.975, n − 1) · sd / √n. One value has no
    spread: its sd and interval are NaN."""

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
    """The smallest number of seeds, more than ``n``, whose t-interval at ``level``
    (one-sided quantile) would be narrower than ``|mean_value|``, were the mean and the
    spread to stay as measured: a planning figure, not a promise. None where it cannot
    be told (no spread yet); more than :data:`MAX_SEEDS` where it is not in reach."""
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
    """One setting against another run with the same seeds: the per-seed
    differences, their mean with its confidence interval, and a paired t-test (a
    one-sample t-test of the differences, Student 1908). ``verdict``:
    ``"differs"`` where p < 0.05, else ``"undecided"``: a difference not found
    is not a difference ruled out."""

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
        if self.verdict == "differs":
            return self.estimate.n
        e = self.estimate
        return seeds_to_decide(e.mean, e.sd, e.n, 1 - ALPHA / 2)

    def decision(self) -> str:
        """The verdict in words, with how many seeds would decide an undecided
        one."""
        if self.verdict == "differs":
            return "differs"
        return _seeds_text(self.seeds_to_decide)


@dataclass(frozen=True)
class Equivalence:
    """Our estimates over seeds against one reference number (the paper's, as
    quoted): the gap's mean and confidence interval, the t-test of gap = 0, and
    the equivalence test, two one-sided t-tests (TOST, Schuirmann 1987) of
    −margin < gap < margin. ``verdict``: ``"equivalent"`` where the TOST p <
    0.05 (the gap's 90% interval lies inside ±margin); ``"beyond the margin"``
    where the 90% interval lies wholly outside it; else ``"undecided"``. The
    reference is taken as a fixed number: the paper's own seed spread is
    unknown."""

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


# Table cells.
def _nats(value: float, sign: str = "") -> str:
    """A number of nats for a table: ``–`` where it is NaN."""
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


def _per_seed(differences: Sequence[float]) -> str:
    return ", ".join(f"{d:+.2f}" for d in differences) or "–"


def _group(records: Iterable[dict], *fields: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault(tuple(record[f] for f in fields), []).append(record)
    return groups


def _quadrants(q: int) -> str:
    return f"{q} quadrant{'s' * (q > 1)}"


def home(records: Iterable[dict]) -> list[dict]:
    """The records made on the project's machine; those of other hosts are a factor
    of their own (:func:`host_comparisons`), never pooled with these seeds."""
    return [r for r in records if not host_of(r)]


@dataclass(frozen=True)
class Spread(Estimate):
    """One estimator over seeds: the values, their mean with its 95% CI and their sd
    across seeds (:class:`Estimate`), and the mean test-set standard error."""

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
    """Rows (setting, decoder, estimator): seeds, mean [95% CI], sd across seeds,
    mean test s.e."""
    rows = [
        [
            q,
            DECODERS[sees_input].label,
            row,
            s.n,
            ci_cell(s),
            _nats(s.sd),
            f"{s.test_stderr:.2f}",
        ]  # fmt: skip
        for (q, sees_input), spreads in seed_spread(records).items()
        for row, s in spreads.items()
    ]
    header = ["quadrants", "decoder", "estimator", "seeds", "mean [95% CI]",
              "sd across seeds", "mean test s.e."]  # fmt: skip
    return markdown_table(header, rows)


def _by_seed(records: Iterable[dict]) -> dict[tuple, dict]:
    """Records by (profile, quadrants, decoder_sees_input, seed)."""
    return {
        (r["profile"], r["num_quadrant_inputs"], r["decoder_sees_input"], r["seed"]): r
        for r in records
    }


def decoder_differences(records: list[dict]) -> dict[tuple[int, str], Paired]:
    """Per (quadrants, estimator): p(y|x,z) − p(y|z) of the same protocol, paired by
    seed (the seeds both decoders have; both share each seed's baseline)."""
    by_key = _by_seed(home(records))
    comparison = {}
    for q in sorted({key[1] for key in by_key}):
        for row, field in ESTIMATOR_ROWS.items():
            if row == "NN":  # the same baseline under both decoders
                continue
            pairs = {
                seed: (r[field], by_key[profile, q, False, seed][field])
                for (profile, qq, sees, seed), r in by_key.items()
                if qq == q and sees and (profile, q, False, seed) in by_key
            }
            if pairs:
                comparison[q, row] = Paired.of(pairs)
    return comparison


def paired_table(comparisons: dict, labels: Sequence[str], what: str) -> str:
    """Rows of :class:`Paired` comparisons: per-seed differences, mean [95% CI],
    paired t-test p and verdict. ``comparisons``: {key tuple: Paired}; ``labels``:
    the header of the key's columns; ``what``: the difference's name."""
    rows = [
        [
            *key,
            len(c.seeds),
            _per_seed(c.differences),
            ci_cell(c.estimate, "+"),
            _p(c.p_value),
            c.decision(),
        ]  # fmt: skip
        for key, c in comparisons.items()
    ]
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
    seed's stopping epoch and IS estimate, sorted by epoch, and how much of the IS
    spread across seeds a straight line in the epoch accounts for (r² of the least
    squares fit) and Spearman's rank correlation."""
    out = {}
    groups = _group(home(records), "num_quadrant_inputs", "decoder_sees_input")
    for key, group in sorted(groups.items()):
        points = sorted((r["epochs_cvae"], r["cvae_nll_is"], r["seed"]) for r in group)
        epochs = [p[0] for p in points]
        values = [p[1] for p in points]
        varies = len(set(epochs)) > 1 and len(set(values)) > 1
        fit = stats.linregress(epochs, values) if len(points) > 2 and varies else None
        rho = stats.spearmanr(epochs, values).statistic if fit else math.nan
        out[key] = {
            "epochs": epochs,
            "is": values,
            "seeds": [p[2] for p in points],
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
        summary[profile] = {
            "seeds": len(group),
            "best_val_loss": Estimate(
                tuple(r["curves"]["best_val_loss"] for r in group)
            ),
            "epochs": Estimate(tuple(r["epochs_cvae"] for r in group)),
            "is": Estimate(tuple(r["cvae_nll_is"] for r in group)),
            "is_large_s": Estimate(tuple(_large_s_estimates(group))),
            "large_s": _large_s(group[0]),
        }
    return summary


def _large_s(record: dict) -> int | None:
    """The large S of a run's second IS estimate, None where it has none."""
    return record.get("is_large_s", {}).get("sample_sizes", [None])[-1]


def _large_s_estimates(records: Iterable[dict]) -> list[float]:
    """The IS estimate at the large S of each of ``records`` that has one."""
    return [r["is_large_s"]["mean"][-1] for r in records if "is_large_s" in r]


def protocol_table(records: list[dict]) -> str:
    summary = protocol_summary(records)
    large_s = next(iter(summary.values()))["large_s"] if summary else None
    small_s = records[0]["num_samples"] if records else None
    rows = [
        [
            name,
            s["seeds"],
            f"{s['epochs'].mean:.0f}",
            ci_cell(s["best_val_loss"]),
            ci_cell(s["is"]),
            ci_cell(s["is_large_s"]),
        ]  # fmt: skip
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
    for profile in protocol_summary(records):
        if not profile.startswith(base + "-"):
            continue
        keys = [k for k in by_key if k[0] == profile and (base, *k[1:]) in by_key]
        pairs = [(k[3], by_key[k], by_key[(base, *k[1:])]) for k in keys]
        out[profile] = {
            "validation": Paired.of(
                {
                    s: (r["curves"]["best_val_loss"], t["curves"]["best_val_loss"])
                    for s, r, t in pairs
                }  # fmt: skip
            ),
            "is_large_s": Paired.of(
                {
                    s: (r["is_large_s"]["mean"][-1], t["is_large_s"]["mean"][-1])
                    for s, r, t in pairs
                    if "is_large_s" in r and "is_large_s" in t
                }  # fmt: skip
            ),
        }
    return out


def lever_table(records: list[dict], base: str) -> str:
    """:func:`lever_comparisons` as a table, validation then test."""
    comparisons = lever_comparisons(records, base)
    large_s = _large_s(records[0]) if records else None
    rows = {
        (name, split): c[key]
        for name, c in comparisons.items()
        for split, key in (
            ("validation −ELBO", "validation"),
            (f"test IS, S = {large_s}", "is_large_s"),
        )  # fmt: skip
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
    """The levers whose protocol beat ``base`` (the tutorial's protocol) on the
    validation split: a lower best validation −ELBO, paired by seed, by a paired
    t-test at the 5% level. Pulled together, they make the converged protocol;
    the test set plays no part."""
    helping = []
    for name, c in lever_comparisons(records, base).items():
        levers = split_levers(name.removeprefix(base + "-"))
        validation = c["validation"]
        won = validation.verdict == "differs" and validation.estimate.mean < 0
        if levers and won:
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


def converged_summary(
    records: list[dict], seed_records: list[dict], base: str
) -> dict[tuple[int, bool], dict]:
    """Per (quadrants, decoder_sees_input): the converged protocol's runs of the
    project's machine, IS at S = 100 and at the large S (:class:`Estimate`), the
    asymptote step's estimates where there are any, and the converged protocol
    against the tutorial's (``base``'s runs of the seed study, same decoder), IS
    at S = 100 paired by seed (:class:`Paired`)."""
    tutorial = {
        (r["num_quadrant_inputs"], r["decoder_sees_input"], r["seed"]): r
        for r in home(seed_records)
        if r["profile"] == base
    }
    summary = {}
    groups = _group(home(records), "num_quadrant_inputs", "decoder_sees_input")
    for (q, sees), group in sorted(groups.items()):
        against = Paired.of(
            {
                r["seed"]: (
                    r["cvae_nll_is"],
                    tutorial[q, sees, r["seed"]]["cvae_nll_is"],
                )
                for r in group
                if (q, sees, r["seed"]) in tutorial
            }  # fmt: skip
        )
        summary[q, sees] = {
            "seeds": sorted(r["seed"] for r in group),
            "epochs": Estimate(tuple(r["epochs_cvae"] for r in group)),
            "is": Estimate(tuple(r["cvae_nll_is"] for r in group)),
            "is_large_s": Estimate(tuple(_large_s_estimates(group))),
            "large_s": _large_s(group[0]),
            "asymptote": asymptote_rows(group),
            "against_tutorial": against,
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
    cells = sorted({(r.num_quadrant_inputs, r.decoder_sees_input) for r in planned})
    per_cell = {
        cell: sum(
            (r.num_quadrant_inputs, r.decoder_sees_input) == cell for r in planned
        )
        for cell in cells
    }
    large_s = next(iter(summary.values()))["large_s"] if summary else None
    small_s = records[0]["num_samples"] if records else None
    rows = [
        [
            q,
            DECODERS[sees].label,
            len(c["seeds"]),
            f"{c['epochs'].mean:.0f}",
            ci_cell(c["is"]),
            ci_cell(c["is_large_s"]),
            _per_seed(c["against_tutorial"].differences),
            ci_cell(c["against_tutorial"].estimate, "+"),
            _p(c["against_tutorial"].p_value),
            c["against_tutorial"].decision(),
        ]  # fmt: skip
        for (q, sees), c in summary.items()
    ]
    rows += [
        [
            q,
            DECODERS[sees].label,
            f"0 of {per_cell[q, sees]}",
            "–",
            "–",
            "–",
            "–",
            "–",
            "–",
            "undecided (no runs in yet)",
        ]  # fmt: skip
        for q, sees in cells
        if (q, sees) not in summary
    ]
    rows.sort(key=lambda row: (row[0], row[1] != DECODERS[False].label))
    header = ["quadrants", "decoder", "seeds", "epochs (mean)",
              f"IS, S = {small_s} [95% CI]", f"IS, S = {large_s} [95% CI]",
              f"converged − tutorial, S = {small_s}, per seed", "mean [95% CI]",
              "paired t-test p", "verdict"]  # fmt: skip
    return markdown_table(header, rows)


def asymptote_rows(records: Iterable[dict]) -> list[dict]:
    """The runs with the asymptote step: per run, its IS at S = 100, at the large S
    and at the asymptote's S (5,000 at the full budget), all on the whole test set."""
    rows = []
    for r in records:
        if "is_asymptote" not in r:
            continue
        rows.append(
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
        )
    return sorted(rows, key=lambda row: (row["quadrants"], row["decoder_sees_input"]))


def asymptote_table(records: list[dict], planned: int) -> str:
    """:func:`asymptote_rows` as a table, or a line that says none is in yet."""
    rows = asymptote_rows(records)
    if not rows:
        return f"None of the {planned} runs of the asymptote step is in yet."
    large_s = _large_s(records[0])
    s = rows[0]["asymptote_s"]
    table = [
        [
            r["quadrants"],
            DECODERS[r["decoder_sees_input"]].label,
            r["seed"],
            r["host"] or "this project's",
            f"{r['is']:.2f}",
            _nats(r["is_large_s"]),
            f"{r['is_asymptote']:.2f} ± {r['asymptote_stderr']:.2f}",
            _nats(r["is_asymptote"] - r["is_large_s"], "+"),
        ]  # fmt: skip
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
        rows += [(f"CVAE IS, {DECODERS[sees].label}, {protocol}", "CVAE IS")
                 for sees in (False, True)]  # fmt: skip
    rows += [(f"NN − CVAE IS, {DECODERS[sees].label}, converged", "NN − CVAE")
             for sees in (False, True)]  # fmt: skip
    return rows


def paper_number(row: str, q: int) -> float:
    """The paper's number as quoted: ``NN``, ``CVAE IS`` or ``NN − CVAE``."""
    if row == "NN − CVAE":
        return PAPER_AS_QUOTED["NN"][q] - PAPER_AS_QUOTED["CVAE IS"][q]
    return PAPER_AS_QUOTED[row][q]


def paper_comparisons(
    seed_records: list[dict], converged_records: Iterable[dict]
) -> dict[tuple[int, str], Equivalence]:
    """Per (quadrants, name of :func:`paper_rows`): our seeds against the paper's
    number as quoted (:class:`Equivalence`): the baseline (NN), the CVAE's IS of each
    decoder for the tutorial's protocol (S = 100) and for the converged protocol (at
    its large S), and NN − CVAE, the gap the CVAE closes, of the converged runs (each
    seed's baseline and CVAE at the large S) against the paper's NN − CVAE: a
    comparison in which whatever shifts both models of a set-up cancels."""
    seeds = _group(home(seed_records), "num_quadrant_inputs", "decoder_sees_input")
    conv = _group(home(converged_records), "num_quadrant_inputs", "decoder_sees_input")
    out = {}
    for q in QUADRANT_SETTINGS:
        values: dict[str, tuple[float, ...]] = {}
        if (q, False) in seeds:
            values["NN"] = tuple(r["baseline_nll"] for r in seeds[q, False])
        for sees in (False, True):
            label = DECODERS[sees].label
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
                out[q, name] = Equivalence(values[name], paper_number(row, q))
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
        # the converged protocol's rows stand once any of its runs is in, empty or not
        planned = "converged" in name and bool(converged_records)
        if not planned and not any((q, name) in comparisons for q in QUADRANT_SETTINGS):
            continue
        if row not in shown:
            shown.add(row)
            rows.append([f"{row}, Sohn et al. (as commonly quoted)",
                         *(f"{paper_number(row, q):.2f}" for q in QUADRANT_SETTINGS)])  # fmt: skip
        cells = [ci_cell(Estimate(comparisons[q, name].values))
                 if (q, name) in comparisons else "–" for q in QUADRANT_SETTINGS]  # fmt: skip
        s = "" if name == "NN" else f", S = {large_s if 'converged' in name else 100}"
        rows.append([f"{name}{s}, this book", *cells])
    header = ["negative CLL (nats/image), mean [95% CI]",
              *(_quadrants(q) for q in QUADRANT_SETTINGS)]  # fmt: skip
    return markdown_table(header, rows)


def equivalence_table(
    seed_records: list[dict], converged_records: Iterable[dict] = ()
) -> str:
    """:func:`paper_comparisons` as a table: the gap to the paper's number, its 95%
    CI, the t-test of a zero gap, the TOST p and the verdict at
    :data:`EQUIVALENCE_MARGIN`."""
    comparisons = paper_comparisons(seed_records, list(converged_records))
    order = [name for name, _ in paper_rows()]
    rows = [
        [
            q,
            name,
            c.gap.n,
            ci_cell(c.gap, "+"),
            _p(c.gap.p_value()),
            _p(c.p_tost),
            c.decision(),
        ]  # fmt: skip
        for (q, name), c in sorted(
            comparisons.items(), key=lambda i: (i[0][0], order.index(i[0][1]))
        )
    ]
    header = ["quadrants", "ours", "seeds", "ours − paper [95% CI]",
              "t-test p (gap = 0)", f"TOST p (±{EQUIVALENCE_MARGIN})",
              "verdict"]  # fmt: skip
    return markdown_table(header, rows)


def bf16_paired(precision: dict, records: list[dict]) -> dict[int, dict]:
    """Per setting, bf16 − fp32 of the committed precision comparison: one seed, so
    one paired difference and no test. ``seeds_to_decide``: how many seeds a paired
    test would need were the difference to stay and its per-seed spread to be that of
    two independent runs (√2 × the seed study's sd of the same estimator and
    decoder), a planning figure."""
    spreads = seed_spread(records)
    row = next(r for r, key in ESTIMATOR_ROWS.items() if key == precision["estimator"])
    out = {}
    for q_text, setting in precision["settings"].items():
        spread = spreads.get((int(q_text), precision["decoder_sees_input"]), {}).get(
            row
        )
        if spread is None:
            continue
        paired = Paired((0,), (setting["difference"],))
        sd = math.sqrt(2) * spread.sd
        out[int(q_text)] = {
            "paired": paired,
            "difference": setting["difference"],
            "seed_sd": spread.sd,
            "seeds_to_decide": seeds_to_decide(
                setting["difference"], sd, 2, 1 - ALPHA / 2
            ),
        }
    return out


def host_comparisons(records: list[dict]) -> dict[tuple, dict]:
    """Runs made on another host, per (protocol, quadrants, decoder, host), against
    the project's machine: each host's IS at S = 100 (:class:`Estimate`), and the
    difference paired by seed where both made the same seeds, else Welch's t-test of
    the two means (Welch 1947)."""
    ours = _group(home(records), "profile", "num_quadrant_inputs", "decoder_sees_input")
    theirs = _group(
        ({**r, "_host": host_of(r)} for r in records if host_of(r)),
        "profile",
        "num_quadrant_inputs",
        "decoder_sees_input",
        "_host",
    )
    out = {}
    for (profile, q, sees, host), group in sorted(theirs.items()):
        mine = ours.get((profile, q, sees), [])
        here = {r["seed"]: r["cvae_nll_is"] for r in mine}
        there = {r["seed"]: r["cvae_nll_is"] for r in group}
        shared = sorted(set(here) & set(there))
        paired = Paired.of({s: (there[s], here[s]) for s in shared})
        welch = math.nan
        if len(here) > 1 and len(there) > 1:
            welch = float(
                stats.ttest_ind(
                    list(there.values()), list(here.values()), equal_var=False
                ).pvalue  # fmt: skip
            )
        out[profile, q, sees, host] = {
            "host": Estimate(tuple(there.values())),
            "home": Estimate(tuple(here.values())),
            "paired": paired,
            "welch_p": welch,
        }
    return out


def host_table(records: list[dict]) -> str:
    comparisons = host_comparisons(records)
    rows = [
        [
            profile,
            q,
            DECODERS[sees].label,
            host,
            ci_cell(c["host"]),
            ci_cell(c["home"]),
            ci_cell(c["paired"].estimate, "+") if c["paired"].seeds else "–",
            _p(c["paired"].p_value) if len(c["paired"].seeds) > 1 else _p(c["welch_p"]),
            c["paired"].decision()
            if len(c["paired"].seeds) > 1
            else ("differs" if c["welch_p"] < ALPHA else "undecided"),
        ]  # fmt: skip
        for (profile, q, sees, host), c in comparisons.items()
    ]
    header = ["protocol", "quadrants", "decoder", "host", "IS there [95% CI]",
              "IS on this project's machine [95% CI]",
              "there − here, paired by seed [95% CI]", "p (paired, else Welch)",
              "verdict"]  # fmt: skip
    return markdown_table(header, rows)


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
    the records of the code before 2026-12-04), hosts, devices, with the runs of
    each."""

    def fields(record: dict) -> dict:
        run = record["provenance"]
        return {
            **record,
            **{f"_{k}": v for k, v in run.items()},
            "_trained": run.get("engine") or record["trained_by"]["cvae"],
            "_host": host_of(record) or "this project's",
        }

    groups = _group(
        map(fields, records), "_commit", "_trained", "_host", "_device", "_cpu"
    )
    rows = [[*key, len(group)] for key, group in sorted(groups.items())]
    return markdown_table(
        ["commit", "trained by", "host", "device", "cpu", "runs"], rows
    )


def _run_of(record: dict) -> StudyRun:
    return StudyRun(
        record["profile"],
        record["num_quadrant_inputs"],
        record["decoder_sees_input"],
        record["seed"],
        host=host_of(record),
    )


def _found(results_dir: Path, study: str, base: Profile) -> list[dict]:
    """The records of ``study`` in ``results_dir``: the project's machine's, then
    every other host's that is there."""
    hosts = sorted(
        {p.stem.rpartition("_host-")[2] for p in results_dir.glob("*_host-*.json")}
    )
    found = load_runs(results_dir, study_runs(study, base))
    for host in hosts:
        found += load_runs(results_dir, study_runs(study, base, host))
    return found


def write_report(results_dir: str | Path, base: Profile) -> Path:
    """``README.md`` in ``results_dir``: the tables of every run found there."""
    results_dir = Path(results_dir)
    found = {name: _found(results_dir, name, base) for name in STUDIES}
    seeds, protocols, converged_runs = (found[name] for name in STUDIES[:3])
    everything = {_run_of(r).name: r for runs in found.values() for r in runs}.values()

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
        parts += ["## Protocols, 1 quadrant, p(y|z)\n", protocol_table(protocols)]
        parts += ["### Each lever against the tutorial's protocol, paired by seed\n",
                  lever_table(protocols, base.name)]  # fmt: skip
        chosen = chosen_protocol(protocols)
        if chosen:
            parts.append(
                f"Lowest mean validation loss: `{chosen}`. Levers that beat the "
                "tutorial's protocol on the validation split (paired t-test, p < "
                "0.05): "
                + (
                    ", ".join(
                        f"`{lv}`" for lv in levers_that_help(protocols, base.name)
                    )
                    or "none"
                )  # fmt: skip
                + ".\n"
            )
    if converged_runs:
        parts += [f"## The converged protocol (`{converged(base).name}`)\n",
                  converged_table(converged_runs, seeds, base.name,
                                  study_runs("converged", base))]  # fmt: skip
        planned = len(study_runs("asymptote", base))
        s = max(base.evaluation.curve_sample_sizes)
        parts += [f"### IS at S = {s} on the whole test set\n",
                  asymptote_table(converged_runs, planned)]  # fmt: skip
    if seeds:
        parts += ["## The paper's Table 1, as commonly quoted\n",
                  paper_table(seeds, converged_runs),
                  "### Equivalence with the paper's numbers\n",
                  equivalence_table(seeds, converged_runs)]  # fmt: skip
    others = [r for r in everything if host_of(r)]
    if others:
        parts += ["## Runs of other hosts, a factor of their own\n",
                  host_table(list(everything))]  # fmt: skip
    if everything:
        hours = compute_hours(everything)
        spent = ", ".join(f"{kind}: {h:.1f} h" for kind, h in sorted(hours.items()))
        parts += ["## Provenance\n", provenance_table(list(everything)),
                  f"Compute spent (training once per model, and evaluation): {spent}.\n"]  # fmt: skip
    path = results_dir / "README.md"
    # one blank line between blocks, whatever ends each
    path.write_text("\n\n".join(part.strip() for part in parts) + "\n")
    return path
