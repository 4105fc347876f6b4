"""The speed report: reads what the reference run measured (bench JSON, metrics, time logs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .pipeline import DECODER_DIRS, load_results


def read_time_log(path: str | Path) -> dict[str, float]:
    """Wall time (s) and peak resident memory (MiB) from a ``/usr/bin/time -v`` log."""
    text = Path(path).read_text()
    rss_kb = float(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text).group(1)
    seconds = 0.0
    for part in clock.split(":"):
        seconds = seconds * 60 + float(part)
    return {"wall_s": seconds, "peak_rss_mib": rss_kb / 1024}


def bench_table(bench: dict) -> str:
    """Markdown: seconds per 60k-image epoch, in-memory against the seed's per-item pipeline."""
    lines = ["| seconds per 60k-image epoch | in-memory (this book) | per-item DataLoader "
             "(Pyro example) | ratio |", "|---|---|---|---|"]
    for label, key in (("baseline", "baseline"), ("CVAE", "cvae")):
        memory, seed = bench[f"{key}_epoch_s"], bench[f"seed_{key}_epoch_s"]
        lines.append(f"| {label} | {memory:.1f} | {seed:.1f} | {seed / memory:.1f}× |")
    return "\n".join(lines) + "\n"


def run_table(reference_dir: str | Path) -> str:
    """Markdown: epochs, training seconds and evaluation seconds per setting, per decoder."""
    reference_dir = Path(reference_dir)
    lines = ["| decoder | quadrants | epochs (NN / CVAE) | train s | evaluation s |",
             "|---|---|---|---|---|"]
    for decoder, folder in DECODER_DIRS.items():
        for r in load_results(reference_dir / folder):
            lines.append(f"| {'p(y|x,z)' if decoder else 'p(y|z)'} | {r['num_quadrant_inputs']} | "
                         f"{r['epochs_baseline']} / {r['epochs_cvae']} | "
                         f"{r['train_seconds']:.0f} | {r['eval_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def process_table(reference_dir: str | Path) -> str:
    """Markdown: wall time and peak memory of each whole ``train`` command."""
    lines = ["| command | wall time | peak memory |", "|---|---|---|"]
    for decoder, folder in DECODER_DIRS.items():
        log = Path(reference_dir) / "logs" / f"time_{folder}.txt"
        if log.is_file():
            t = read_time_log(log)
            flag = " --decoder-sees-input" if decoder else ""
            lines.append(f"| `train --profile full{flag}` | {t['wall_s'] / 60:.1f} min | "
                         f"{t['peak_rss_mib']:.0f} MiB |")
    return "\n".join(lines) + "\n"


def load_bench(reference_dir: str | Path) -> dict:
    """The ``bench --pipeline both`` figures saved by the reference run."""
    return json.loads((Path(reference_dir) / "bench.json").read_text())


def machine_description() -> str:
    """CPU model and core count of this machine, e.g. ``"2 cores, AMD EPYC 9B14"``."""
    import os
    import platform

    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        if found:
            model = found.group(1).strip()
    return f"{os.cpu_count()} cores, {model}"


def write_reference_readme(reference_dir: str | Path, commit: str, notes: str = "") -> Path:
    """Write ``README.md`` of the reference run from what it saved: provenance and tables.

    ``notes`` (Markdown) is appended as a last section, for what the files cannot tell.
    """
    from .pipeline import results_table

    reference_dir = Path(reference_dir)
    logs = reference_dir / "logs"
    started = (logs / "started.txt").read_text().strip() if (logs / "started.txt").is_file() else "?"
    first = load_results(reference_dir / DECODER_DIRS[False])[0]
    versions = ", ".join(f"{k} {v}" for k, v in first["versions"].items())
    parts = [
        "# Reference results: the full budget, seed 0\n",
        "Metrics, sample grids and timings of one full-budget run of both decoders, read by the "
        "book's introduction, evaluation chapter and speed appendix. Checkpoints are not "
        "committed (they are large); the command below makes them again.\n",
        "## Provenance\n",
        "- Command: `make reference` (from the repository root), which runs\n"
        "  `python -m cvae_helpers train --profile full --seed 0` once per decoder under\n"
        "  `/usr/bin/time -v`, then `figures` and `bench --pipeline both --batches 100`.",
        f"- Commit: `{commit}` (the code that trained and evaluated these models).",
        f"- Started: {started} (UTC).",
        f"- Machine: {machine_description()}, CPU only, no GPU.",
        f"- Versions: {versions}.",
        f"- Data: MNIST, 50,000 training / 10,000 validation images (seed 0) from the 60k "
        f"training set; {first['num_test_images']} test images; S = {first['num_samples']} "
        "samples per test image for MC and IS.\n",
    ]
    for decoder, folder in DECODER_DIRS.items():
        label = "p(y|x,z), the paper's" if decoder else "p(y|z), the Pyro example's (default)"
        records = load_results(reference_dir / folder)
        parts += [f"## Decoder {label}: `{folder}/`\n",
                  "Negative conditional log-likelihood on the test set, nats per image, mean ± "
                  "standard error over images (lower is better).\n", results_table(records),
                  f"Sample grids: `{folder}/grid_q1.png`, `grid_q2.png`, `grid_q3.png`.\n"]
    parts += ["## Time and memory\n", run_table(reference_dir), process_table(reference_dir)]
    if (reference_dir / "bench.json").is_file():
        parts += ["Seconds per 60,000-image training epoch (`bench --pipeline both`), in-memory "
                  "batches against the Pyro example's per-item `DataLoader`:\n",
                  bench_table(load_bench(reference_dir))]
    if notes:
        parts += ["## Notes\n", notes]
    path = reference_dir / "README.md"
    path.write_text("\n".join(parts))
    return path


if __name__ == "__main__":
    import subprocess
    import sys

    from .pipeline import REFERENCE_DIR

    if sys.argv[1:] != ["write-readme"]:
        sys.exit("usage: python -m cvae_helpers.speed write-readme")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "unknown"
    print(f"Wrote {write_reference_readme(REFERENCE_DIR, head)}")
