"""The reference run's report: ``timings.json`` from its time logs, and its
``README.md``.

Usage (from the repository root; ``make reference`` runs it last)::

    python -m tools.reference_report [--dir results/reference] [--commit abc1234]
    [--eval-commit HEAD]

It reads what the run saved (metrics, ``bench.json``, ``logs/time_*.txt`` written by
``/usr/bin/time -v``), writes ``timings.json`` (which the speed appendix reads through
the package) and ``README.md`` with the provenance and the tables. ``notes.md`` in the
same folder, if present, becomes the README's last section: what the files cannot tell.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

from cvae_helpers.config import DECODERS
from cvae_helpers.results import (
    convergence_table,
    diversity_table,
    family_table,
    load_family_reference,
    load_reference,
    load_reference_json,
    precision_table,
    results_table,
    run_table,
    timings_table,
)
from cvae_helpers.speed import bench_table, profile_table, speed_table

ROOT = Path(__file__).resolve().parent.parent


def read_time_log(path: str | Path) -> dict[str, float]:
    """Wall time (s) and peak resident memory (MiB) from a ``/usr/bin/time -v`` log.

    A run that was interrupted and resumed (``time -a`` appends) holds one entry per
    attempt: the wall times add up, the peak is the largest."""
    text = Path(path).read_text()
    rss_kb = [
        float(kb)
        for kb in re.findall(r"Maximum resident set size \(kbytes\): (\d+)", text)
    ]
    clocks = re.findall(
        r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text
    )
    if not clocks or not rss_kb:
        raise ValueError(f"{path} holds no /usr/bin/time -v report.")
    total = 0.0
    for clock in clocks:
        seconds = 0.0
        for part in clock.split(":"):
            seconds = seconds * 60 + float(part)
        total += seconds
    return {"wall_s": total, "peak_rss_mib": max(rss_kb) / 1024}


def machine_description(record: dict) -> str:
    """The machine that made ``record``, as the record names it (its ``device``:
    ``"cpu (Intel(R) Xeon(R) Processor, AVX512 kernels, 2 threads)"``), not the one
    that writes the report; records older than that field name no machine."""
    return record.get("device", "not recorded (a record older than its `device` field)")


def write_timings(reference_dir: Path) -> Path:
    """``timings.json``: wall time and peak memory of each decoder's ``train`` command,
    and of the whole ``make reference`` where ``logs/time_reference.txt`` was kept."""
    commands = []
    # make reference: one process per quadrant setting, both decoders, side by side
    for q in (1, 2, 3):
        log = reference_dir / "logs" / f"time_q{q}.txt"
        if log.is_file():
            commands.append(
                {
                    "command": f"train --profile full --quadrants {q}, both decoders "
                    "(one thread, the three settings side by side)",
                    **read_time_log(log),
                }
            )
    # make reference-gsnn (and reference runs before the one above): one log per train
    # command
    for family in ("cvae", "gsnn", "hybrid"):
        for decoder, folder in ((d.sees_input, d.folder) for d in DECODERS.values()):
            prefix, flags = (
                ("", "") if family == "cvae" else (f"{family}_", f" --family {family}")
            )
            log = reference_dir / "logs" / f"time_{prefix}{folder}.txt"
            if log.is_file():
                flags += " --decoder-sees-input" if decoder else ""
                commands.append(
                    {
                        "command": f"train --profile full{flags}",
                        "decoder_sees_input": decoder,
                        **read_time_log(log),
                    }
                )
    for name, command in [
        ("diversity", "diversity --profile full"),
        *(
            (
                f"convergence_{d.folder}",
                "convergence --profile full"
                + (" --decoder-sees-input" if d.sees_input else ""),
            )
            for d in DECODERS.values()
        ),
    ]:
        log = reference_dir / "logs" / f"time_{name}.txt"
        if log.is_file():
            commands.append({"command": command, **read_time_log(log)})
    whole = reference_dir / "logs" / "time_reference.txt"
    # `make reference` runs this report before its own time log is complete; rerun it
    # afterwards
    if whole.is_file() and "Elapsed (wall clock)" in whole.read_text():
        commands.append({"command": "make reference", **read_time_log(whole)})
    path = reference_dir / "timings.json"
    path.write_text(
        json.dumps(
            {"source": "logs/time_*.txt (/usr/bin/time -v)", "commands": commands},
            indent=1,
        )
        + "\n"
    )
    return path


def write_readme(
    reference_dir: Path, commit: str, eval_commit: str | None = None
) -> Path:
    """``README.md`` of the reference run from what it saved: provenance and tables."""
    logs = reference_dir / "logs"
    started = (
        (logs / "started.txt").read_text().strip()
        if (logs / "started.txt").is_file()
        else "?"
    )
    reference = load_reference(reference_dir)
    first = reference[False][0]
    versions = ", ".join(f"{k} {v}" for k, v in first["versions"].items())
    parts = [
        "# Reference results: the full budget, seed 0\n",
        "Metrics, completion grids and timings of one full-budget run of both decoders, read by "
        "the book's introduction, evaluation chapter and appendices. Checkpoints are not "
        "committed (they are large); the command below makes them again.\n",
        "## Provenance\n",
        _command(logs),
        _trainer_line(reference),
        f"- Commit: `{commit}` (the code that trained and evaluated these models)."
        if eval_commit in (None, commit)
        else f"- Commits: `{commit}` trained these models; `{eval_commit}` evaluated them again and "
        "made the grids (`make reference-eval TRAINED=...`: the cached models, no retraining).",
        f"- Started: {started} (UTC).",
        f"- Machine: {machine_description(first)}, no GPU.",
        f"- Versions: {versions}.",
        f"- Data: MNIST, 50,000 training / 10,000 validation images (seed 0) from the 60k "
        f"training set; {first['num_test_images']} test images; S = {first['num_samples']} "
        "samples per test image for MC and IS.\n",
    ]
    for decoder, records in reference.items():
        folder = DECODERS[decoder].folder
        parts += [
            f"## Decoder {DECODERS[decoder].long_label}: `{folder}/`\n",
            "Negative conditional log-likelihood on the test set, nats per image, mean ± "
            "standard error over images (lower is better).\n",
            results_table(records),
            f"Completion grids: `{folder}/grid_q1.png`, `grid_q2.png`, `grid_q3.png`.\n",
        ]
    parts += ["## Time and memory\n", run_table(reference)]
    timings = load_reference_json("timings.json", reference_dir)
    if timings is not None:
        parts.append(timings_table(timings))
    bench = load_reference_json("bench.json", reference_dir)
    if bench is not None:
        parts += [
            "Seconds per 60,000-image training epoch (`bench --batches 100`): the book's "
            "step and Pyro's `SVI` on in-memory batches, and the Pyro example's per-item "
            "`DataLoader`, side by side in one run:\n",
            bench_table(bench),
        ]
    fp32 = load_reference_json("bf16/bench_fp32.json", reference_dir)
    bf16 = load_reference_json("bf16/bench_bf16.json", reference_dir)
    if fp32 is not None and bf16 is not None:
        parts += [
            "The book's step in fp32 and in bf16 mixed precision, side by side in one run "
            "(`make reference-bf16`, `bf16/bench_*.json`):\n",
            speed_table({"fp32": fp32, "bf16": bf16}),
        ]
    step_times = load_reference_json("step_times.json", reference_dir)
    if step_times is not None:
        parts += [
            "Where one CVAE training step's time goes (`step-times`, torch.profiler):\n",
            profile_table(step_times),
        ]
    precision = load_reference_json("precision.json", reference_dir)
    if precision is not None:
        parts += [
            "## bf16 mixed precision against fp32\n",
            "The default decoder trained in bf16 (`make reference-bf16`, `bf16/`), "
            "evaluated in fp32, against the fp32 run above:\n",
            precision_table(precision),
        ]
    parts += _gap_sections(reference_dir)
    notes = reference_dir / "notes.md"
    if notes.is_file():
        parts += ["## Notes\n", notes.read_text()]
    path = reference_dir / "README.md"
    path.write_text("\n".join(parts))
    return path


def _command(logs: Path) -> str:
    """How ``make reference`` trained the models, from the time logs it left: one setting
    after another (``time_q*.txt``), or, before 2026-12-02, one decoder at a time."""
    if (logs / "time_q1.txt").is_file():
        how = (
            "`python -m cvae_helpers train --profile full --seed 0 --quadrants N` for both\n"
            "  decoders, the three settings one after the other with torch's default\n"
            "  threads (one per core), as `make book` trains them,"
        )
    else:
        how = "`python -m cvae_helpers train --profile full --seed 0` once per decoder"
    return (
        "- Command: `make reference` (from the repository root), which runs\n"
        f"  {how} under `/usr/bin/time -v`, then `figures`, `bench`, `step-times`\n"
        "  and this report (`python -m tools.reference_report`)."
    )


def _trainer_line(reference: dict) -> str:
    """What trained the CVAEs and the baselines, as the metrics files record it."""
    cvae, baseline = _trainers(reference, "cvae"), _trainers(reference, "baseline")
    if cvae == baseline:
        return f"- Trained by: {cvae}, every model."
    return f"- Trained by: {cvae} (the CVAEs), {baseline} (the baselines)."


def _trainers(reference: dict, model: str) -> str:
    """What trained the reference's ``model`` ("cvae" or "baseline") models: the
    records' ``trained_by`` (the step, or before 2026-12-04 the engine)."""
    # Metrics written before 2026-12-02 do not say: their models were trained by the
    # hand-written loss of that time (the engine later called `fast`, retired since).
    before = "unrecorded (the hand-written loss of that time, the later `fast` engine)"
    names = {
        f"`{record['trained_by'][model]}`" if "trained_by" in record else before
        for records in reference.values()
        for record in records
    }
    return ", ".join(sorted(names))


def _made_by(reference_dir: Path, target: str, step: str | None = None) -> str:
    """Which commit ran ``make <target>`` (its ``logs/commit_<target>.txt``), or that
    target's ``step`` (``logs/commit_<step>.txt``, where the step records its own), as a
    sentence."""
    logs = reference_dir / "logs"
    log = (
        logs / f"commit_{step}.txt"
        if step and (logs / f"commit_{step}.txt").is_file()
        else None
    )
    log = log or logs / f"commit_{target}.txt"
    commit = log.read_text().strip() if log.is_file() else "unknown"
    return f"Made by `make {target}` at commit `{commit}`, seed 0, fp32."


def _gap_sections(reference_dir: Path) -> list[str]:
    """The GSNN chapter's results, where present: the four-way tables, the diversity
    study and the estimators' convergence."""
    parts = []
    families = load_family_reference(reference_dir)
    if families:
        parts += [
            "## NN, GSNN, CVAE and hybrid\n",
            _made_by(reference_dir, "reference-gsnn")
            + " The GSNN and the hybrid (alpha = "
            "0.5) in `gsnn/` and `hybrid/`, one folder per decoder; NN and CVAE from the run "
            "above. Negative CLL, nats per image, S = 100, mean ± standard error.\n",
        ]
        for decoder, by_family in families.items():
            parts += [
                f"Decoder {DECODERS[decoder].long_label}:\n",
                family_table(by_family),
            ]
    diversity = load_reference_json("diversity.json", reference_dir)
    if diversity is not None:
        parts += [
            "## Diversity (`diversity.json`)\n",
            _made_by(reference_dir, "reference-gsnn", "diversity")
            + f" The classifier: {100 * diversity['classifier_test_accuracy']:.2f}% test accuracy on "
            f"{diversity['classifier_test_images']:,} test digits. {diversity['num_samples']} "
            f"completions of each of the first {diversity['num_images']:,} test inputs, decoder "
            f"{DECODERS[diversity['decoder_sees_input']].label}, mean ± standard error over inputs:\n",
            diversity_table(diversity),
        ]
    studies = {
        d.sees_input: load_reference_json(f"convergence_{d.folder}.json", reference_dir)
        for d in DECODERS.values()
    }
    studies = {
        decoder: study for decoder, study in studies.items() if study is not None
    }
    if studies:
        devices = sorted(
            {study.get("device", "unrecorded") for study in studies.values()}
        )
        parts += [
            "## Convergence of the estimators (`convergence_*.json`)\n",
            _made_by(reference_dir, "reference-convergence")
            + f" Computed on {', '.join(devices)}. "
            "IS on the whole test set; each S is a prefix of the same draws (the curves "
            "against S are in the files):\n",
            convergence_table(studies),
        ]
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir",
        type=Path,
        default=ROOT / "results" / "reference",
        help="the reference run's folder (default: results/reference)",
    )
    parser.add_argument(
        "--commit",
        default=None,
        help="the commit that trained the models (default: git's HEAD)",
    )
    parser.add_argument(
        "--eval-commit",
        default=None,
        help="the commit that evaluated them, if another one (make reference-eval)",
    )
    args = parser.parse_args()
    head = (
        subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.strip()
        or "unknown"
    )
    eval_commit = head if args.eval_commit == "HEAD" else args.eval_commit
    # the commit make reference recorded when it started: the code that trained the
    # models
    recorded = args.dir / "logs" / "commit_reference.txt"
    commit = args.commit or (
        recorded.read_text().strip() if recorded.is_file() else head
    )
    print(f"Wrote {write_timings(args.dir)}")
    print(f"Wrote {write_readme(args.dir, commit, eval_commit)}")


if __name__ == "__main__":
    main()
