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
    """Markdown: training and evaluation seconds per setting and peak memory, per decoder."""
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
