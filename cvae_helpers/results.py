"""Results: metrics files, where the reference run lives, Markdown tables, labels,
published numbers.

A metrics record is the dict that :func:`~cvae_helpers.pipeline.metrics_record` returns
and ``metrics_q{N}.json`` stores: the four estimators with their standard errors, the
configuration and the library versions. Everything here reads or formats such files;
nothing trains.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import pretrained
from .config import DECODERS, default_checkpoint_dir, get_profile
from .data import quadrant_label
from .families import CVAE, FAMILIES, get_family

QUADRANT_SETTINGS = (1, 2, 3)
REFERENCE_DIR_ENV = "CVAE_REFERENCE_DIR"
REFERENCE_SUBPATH = Path("results") / "reference"
# What a chapter prints where the reference run's files are not available.
REFERENCE_MISSING = (
    "No reference results here: they come with a checkout of the repository "
    "(results/reference/) or, at the full budget, from its release, and neither "
    "was available."
)

# The estimators of a metrics record, as table rows name them after the family's label.
ESTIMATOR_LABELS = {"mc": "MC", "is": "IS", "neg_elbo": "−ELBO"}

# Published numbers the book compares against, with where they come from. Only numbers
# checked against their source are listed: the paper's Table 1 (Sohn et al., 2015) is
# cited by reference.
PYRO_TUTORIAL = {
    "source": "Pyro tutorial 'Conditional Variational Auto-encoder' (pyro.ai/examples/cvae.html)",
    "what": (
        "negative ELBO under q(z|x,y), estimated with 10 particles (Trace_ELBO), on the "
        "10k MNIST test images, which the tutorial also used for early stopping; the "
        "tutorial calls the CVAE row 'Monte Carlo'"
    ),
    "baseline_nll": {1: 100.4, 2: 61.9, 3: 25.4},
    "cvae": {1: 71.8, 2: 51.0, 3: 24.2},
}


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub/MyST Markdown table of ``str(cell)``; a ``|`` inside a cell (as in
    ``p(y|z)``) is escaped so that it does not end the cell."""

    def line(cells: Iterable[object]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return (
        "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)]) + "\n"
    )


def quadrant_header(first: str) -> list[str]:
    """``[first, "1 quadrant", "2 quadrants", "3 quadrants"]``."""
    return [first, *(quadrant_label(q) for q in QUADRANT_SETTINGS)]


def by_quadrants(records: Iterable[dict]) -> dict[int, dict]:
    """Records keyed by their number of given quadrants."""
    return {r["num_quadrant_inputs"]: r for r in records}


def _estimates(by_q: dict[int, dict], key: str) -> list[str]:
    """``by_q[q][key]`` per setting as mean ± standard error, or "–" where missing."""
    return [
        f"{by_q[q][key]:.2f} ± {by_q[q][key + '_stderr']:.2f}"
        if key in by_q.get(q, {})
        else "–"
        for q in QUADRANT_SETTINGS
    ]


def _numbers(
    prefix: str, by_q: dict[int, dict], labels: dict[str, str], decimals: int = 1
) -> list[list[str]]:
    """A row per ``key: label`` of ``labels``: ``prefix + label``, then ``by_q[q][key]``
    per setting."""
    return [
        [prefix + label, *(f"{by_q[q][key]:.{decimals}f}" for q in QUADRANT_SETTINGS)]
        for key, label in labels.items()
    ]


def results_table(records: list[dict]) -> str:
    """Estimators as rows, 1/2/3 quadrants as columns, mean ± standard error, then the
    gap. The rows name the records' family (CVAE, GSNN or hybrid); a GSNN has MC only.
    """
    by_q = by_quadrants(records)
    family = get_family(record_key(records[0], "family") if records else "cvae")
    rows = [["NN (baseline)", *_estimates(by_q, "baseline_nll")]]
    for estimator, label in ESTIMATOR_LABELS.items():
        key = family.result_key(estimator)
        if any(key in r for r in records):  # a GSNN has no IS or −ELBO
            rows.append([f"{family.label} ({label})", *_estimates(by_q, key)])
    is_key = family.result_key("is")
    if records and all(is_key in r for r in records):
        gaps = [
            f"{by_q[q]['baseline_nll'] - by_q[q][is_key]:.2f}" if q in by_q else "–"
            for q in QUADRANT_SETTINGS
        ]
        rows.append([f"gap: NN − {family.label} (IS)", *gaps])
    return markdown_table(quadrant_header("negative CLL (nats/image)"), rows)


def headline_table(records: list[dict]) -> str:
    """The introduction's table: the baseline against the CVAE (IS), one decimal."""
    labels = {
        "baseline_nll": "NN (baseline)",
        "cvae_nll_is": "CVAE, importance sampling",
    }
    rows = _numbers("", by_quadrants(records), labels)
    return markdown_table(quadrant_header("nats per image"), rows)


def published_comparison_table(reference: dict[bool, list[dict]]) -> str:
    """The Pyro tutorial's numbers beside this book's reference rows, per decoder."""
    tutorial = {
        q: {key: PYRO_TUTORIAL[key][q] for key in ("baseline_nll", "cvae")}
        for q in QUADRANT_SETTINGS
    }
    labels = {"baseline_nll": "NN (baseline)", "cvae": "CVAE ('Monte Carlo')"}
    rows = _numbers("Pyro tutorial: ", tutorial, labels)
    for decoder, records in reference.items():
        labels = {"cvae_neg_elbo": "CVAE (−ELBO)", "cvae_nll_is": "CVAE (IS)"}
        if not decoder:  # the same baseline serves both decoders
            labels = {"baseline_nll": "NN (baseline)", **labels}
        prefix = f"this book, {DECODERS[decoder].label}: "
        rows += _numbers(prefix, by_quadrants(records), labels)
    return markdown_table(quadrant_header("nats per image"), rows)


def baseline_gap_table(gap: dict) -> str:
    """The three ways of training the baseline of ``tools/baseline_gap.py``, test NLL
    each."""
    labels = {
        "book_50k_val_selected": "this book: 50k, epoch chosen on validation",
        "pyro_style_60k_test_selected": "tutorial's procedure: 60k, epoch chosen on test",
        "refit_60k_val_epochs": "60k, epoch count chosen on validation",
    }
    by_q = {int(q): setting for q, setting in gap["settings"].items()}
    rows = _numbers("", by_q, labels, decimals=2)
    return markdown_table(quadrant_header("test NLL, nats per image"), rows)


def write_results(records: list[dict], output_dir: str | Path) -> None:
    """``metrics_q{N}.json`` per setting and ``results.md`` with the table of all of
    them."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for record in records:
        path = output_dir / f"metrics_q{record['num_quadrant_inputs']}.json"
        path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    first = records[0]
    same_run = ("profile", "seed", "decoder_sees_input", "family", "alpha")
    all_records = [
        r
        for r in load_results(output_dir)
        if all(record_key(r, k) == record_key(first, k) for k in same_run)
    ]
    family = get_family(record_key(first, "family"))
    alpha = f", alpha = {first['alpha']:g}" if family.weighted else ""
    trained = "" if family is CVAE else f"Trained as {family.article}{alpha}. "
    text = (
        f"# Negative conditional log-likelihood on the MNIST test set\n\n{trained}"
        f"Profile `{first['profile']}`, seed {first['seed']}, decoder "
        f"{DECODERS[first['decoder_sees_input']].long_label}, "
        f"S = {first['num_samples']} samples, {first['num_test_images']} test images; "
        "mean ± standard error over images. Lower is better.\n\n"
        + results_table(all_records)
    )
    (output_dir / "results.md").write_text(text)


def record_key(record: dict, key: str) -> object:
    """``record[key]``; records written before the model families existed are CVAEs."""
    return record.get(key, "cvae" if key == "family" else None)


def load_results(output_dir: str | Path) -> list[dict]:
    """Every ``metrics_q*.json`` in ``output_dir``, sorted by number of quadrants."""
    records = [
        json.loads(p.read_text())
        for p in sorted(Path(output_dir).glob("metrics_q*.json"))
    ]
    return sorted(records, key=lambda r: r["num_quadrant_inputs"])


def reference_dir(root: str | Path | None = None) -> Path | None:
    """The folder of the committed full-budget reference run, or ``None``.

    ``root`` if given; else ``$CVAE_REFERENCE_DIR``; else ``results/reference`` in the
    working directory or the nearest folder above it (a chapter runs in ``book/``).
    Without a checkout (Colab) the full budget fetches the same files from the release,
    checked against their SHA-256, into the checkpoint cache, once.
    """
    if root is not None:
        return Path(root)
    if os.environ.get(REFERENCE_DIR_ENV):
        return Path(os.environ[REFERENCE_DIR_ENV]).expanduser()
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / REFERENCE_SUBPATH).is_dir():
            return folder / REFERENCE_SUBPATH
    if not get_profile().fetch_pretrained:
        return None
    return _fetched_reference_dir(pretrained.base_url(), default_checkpoint_dir())


@functools.cache
def _fetched_reference_dir(url: str, cache_dir: Path) -> Path | None:
    """The release's reference results, or ``None`` with one line saying why (asked once
    per process, so that a chapter reading several files tries the network once)."""
    try:
        return pretrained.fetch_reference_results(cache_dir, url)
    except pretrained.PretrainedUnavailableError as error:
        print(f"no reference results here: not in a checkout, and {error}")
        return None


def load_reference(root: str | Path | None = None) -> dict[bool, list[dict]]:
    """The reference run's records per decoder (``decoder_sees_input`` → three records);
    decoders not complete are left out, so ``{}`` means no reference results here."""
    folder = reference_dir(root)
    if folder is None:
        return {}
    found = {d.sees_input: load_results(folder / d.folder) for d in DECODERS.values()}
    return {
        decoder: records
        for decoder, records in found.items()
        if len(records) == len(QUADRANT_SETTINGS)
    }


# The four-way table's rows after the baseline's, in the order of the paper's Table 1:
# (family, estimator).
FAMILY_ROWS = (
    ("gsnn", "mc"),
    ("cvae", "mc"),
    ("cvae", "is"),
    ("hybrid", "mc"),
    ("hybrid", "is"),
)


def load_family_reference(
    root: str | Path | None = None,
) -> dict[bool, dict[str, list[dict]]]:
    """The reference run's records per decoder and family: ``{decoder: {"cvae": [...],
    "gsnn": [...], "hybrid": [...]}}``, three records each; only decoders whose three
    families are complete are kept (``make reference-gsnn`` makes them)."""
    folder = reference_dir(root)
    if folder is None:
        return {}
    cvae = load_reference(folder)
    found = {}
    for decoder, d in DECODERS.items():
        # the CVAE's metrics are the run's own; the others' are in <family>/<decoder>/
        families = {
            family.name: load_results(folder / family.name / d.folder)
            for family in FAMILIES.values()
            if family is not CVAE
        }
        families["cvae"] = cvae.get(decoder, [])
        if all(len(r) == len(QUADRANT_SETTINGS) for r in families.values()):
            found[decoder] = families
    return found


def family_table(by_family: dict[str, list[dict]]) -> str:
    """NN / GSNN / CVAE / hybrid as rows, 1/2/3 quadrants as columns, mean ± standard
    error, from ``by_family`` (``"cvae"``, ``"gsnn"``, ``"hybrid"`` → records of one
    decoder). The GSNN has Monte Carlo only (its proposal is its prior); a missing
    family or setting shows as "–"."""
    by_q = {family: by_quadrants(records) for family, records in by_family.items()}
    rows = [["NN (baseline)", *_estimates(by_q.get("cvae", {}), "baseline_nll")]]
    for name, estimator in FAMILY_ROWS:
        family = get_family(name)
        key = family.result_key(estimator)
        label = f"{family.label} ({ESTIMATOR_LABELS[estimator]})"
        rows.append([label, *_estimates(by_q.get(name, {}), key)])
    return markdown_table(quadrant_header("negative CLL (nats/image)"), rows)


# The diversity table's columns: (header, metric, scale, decimals).
DIVERSITY_COLUMNS = (
    ("label entropy (bits)", "entropy_bits", 1, 2),
    ("ambiguous (%)", "ambiguous", 100, 1),
    ("best of 1 (%)", "best_of_1", 100, 1),
    ("best of 5 (%)", "best_of_5", 100, 1),
    ("best of 20 (%)", "best_of_20", 100, 1),
    ("confidence (%)", "confidence", 100, 1),
    ("prior σ", "prior_scale", 1, 3),
)


def diversity_table(study: dict) -> str:
    """Per setting and model (NN, GSNN, CVAE, hybrid), each diversity metric as mean ±
    standard error over the test inputs (``diversity.diversity_study``)."""
    rows = [
        [
            quadrant_label(int(q)),
            model,
            *(
                f"{scale * metrics[key][0]:.{d}f} ± {scale * metrics[key][1]:.{d}f}"
                if key in metrics
                else "–"  # the NN has no latent code
                for _, key, scale, d in DIVERSITY_COLUMNS
            ),
        ]
        for q in sorted(study["settings"], key=int)
        for model, metrics in study["settings"][q].items()
    ]
    return markdown_table(
        ["given", "model", *(header for header, *_ in DIVERSITY_COLUMNS)], rows
    )


def convergence_table(studies: dict[bool, dict]) -> str:
    """The IS estimate on the whole test set at each S of the full-test runs, per
    decoder and setting (``convergence.convergence_study``), mean ± standard error."""
    settings = next(iter(studies.values()))["settings"]
    sizes = next(iter(settings.values()))["full_test_is"]["sample_sizes"]
    rows = []
    for decoder, study in studies.items():
        for q in sorted(study["settings"], key=int):
            full = study["settings"][q]["full_test_is"]
            estimates = zip(full["mean"], full["stderr"], strict=True)
            rows.append(
                [
                    DECODERS[decoder].label,
                    quadrant_label(int(q)),
                    *(f"{m:.2f} ± {e:.2f}" for m, e in estimates),
                    f"{full['mean'][0] - full['mean'][-1]:.2f}",
                ]
            )
    difference = f"S = {sizes[0]:,} minus S = {sizes[-1]:,}"
    header = ["decoder", "given", *(f"IS, S = {s:,}" for s in sizes), difference]
    return markdown_table(header, rows)


def load_reference_json(name: str, root: str | Path | None = None) -> dict | None:
    """A JSON file of the reference run (``bench.json``, ...), or None."""
    folder = reference_dir(root)
    path = folder / name if folder is not None else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def run_table(reference: dict[bool, list[dict]]) -> str:
    """Epochs, training seconds and evaluation seconds per setting, per decoder.

    Training seconds sum the epochs' seconds recorded when each model was trained, so
    they survive an evaluation-only rerun; the two decoders share their baselines.
    """
    rows = [
        [
            DECODERS[decoder].label,
            r["num_quadrant_inputs"],
            f"{r['epochs_baseline']} / {r['epochs_cvae']}",
            f"{r['epoch_seconds_baseline']:.0f} / {r['epoch_seconds_cvae']:.0f}",
            f"{r['eval_seconds']:.1f}",
        ]
        for decoder, records in reference.items()
        for r in records
    ]
    return markdown_table(
        [
            "decoder",
            "quadrants",
            "epochs (NN / CVAE)",
            "training s (NN / CVAE)",
            "evaluation s",
        ],
        rows,
    )


def timings_table(timings: dict) -> str:
    """Wall time and peak memory of each whole ``train`` command (``timings.json``)."""
    rows = [
        [
            f"`{t['command']}`",
            f"{t['wall_s'] / 60:.1f} min",
            f"{t['peak_rss_mib']:.0f} MiB",
        ]
        for t in timings["commands"]
    ]
    return markdown_table(["command", "wall time", "peak memory"], rows)


def precision_table(comparison: dict) -> str:
    """IS CLL of the default decoder trained in fp32 and in bf16
    (``precision.json``)."""
    rows = []
    for q in QUADRANT_SETTINGS:
        c = comparison["settings"][str(q)]
        rows.append(
            [
                quadrant_label(q),
                f"{c['fp32']:.2f}",
                f"{c['bf16']:.2f}",
                f"{c['difference']:+.2f} ± {c['stderr']:.2f}",
                "yes" if c["within_noise"] else "no",
                f"{c['epochs_fp32']} / {c['epochs_bf16']}",
            ]
        )
    return markdown_table(
        [
            "CVAE (IS), nats per image",
            "fp32",
            "bf16",
            "bf16 − fp32",
            "within noise (< 2 s.e.)",
            "epochs (fp32 / bf16)",
        ],
        rows,
    )


def levers_table(levers: dict) -> str:
    """Seconds per CVAE epoch for each lever tried (``levers.json``), fastest last."""
    rows = sorted(levers["levers"].items(), key=lambda item: -item[1])
    return markdown_table(
        ["what the step does", "seconds per 60k-image CVAE epoch"],
        [[name, f"{seconds:.2f}"] for name, seconds in rows],
    )
