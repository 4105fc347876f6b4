"""What bf16 mixed-precision training costs in quality: ``precision.json`` of the
reference run.

Usage (from the repository root; ``make reference-bf16`` runs it)::

    python -m tools.precision_quality [--dir results/reference]

Compares the importance-sampling CLL of the default decoder trained in fp32
(``p_y_given_z/``) and in bf16 (``bf16/``), both evaluated in fp32 on the same test
images, per quadrant setting: the difference bf16 − fp32 and its standard error. The two
runs' errors are combined as if independent, which overstates the error of a difference
on the same images (their per-image values correlate), so "within noise" (|difference| <
2 standard errors) is a lenient test; the per-setting numbers are there to judge.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from cvae_helpers.results import load_results

ROOT = Path(__file__).resolve().parent.parent


def compare(fp32: list[dict], bf16: list[dict]) -> dict:
    """Per setting: both IS estimates, their difference and its standard error."""
    settings = {}
    for a, b in zip(fp32, bf16, strict=True):
        q = a["num_quadrant_inputs"]
        if b["num_quadrant_inputs"] != q:
            raise ValueError(f"settings differ: {q} against {b['num_quadrant_inputs']}")
        stderr = math.hypot(a["cvae_nll_is_stderr"], b["cvae_nll_is_stderr"])
        difference = b["cvae_nll_is"] - a["cvae_nll_is"]
        settings[str(q)] = {
            "fp32": a["cvae_nll_is"],
            "bf16": b["cvae_nll_is"],
            "difference": difference,
            "stderr": stderr,
            "within_noise": abs(difference) < 2 * stderr,
            "epochs_fp32": a["epochs_cvae"],
            "epochs_bf16": b["epochs_cvae"],
            "train_seconds_fp32": a["train_seconds"],
            "train_seconds_bf16": b["train_seconds"],
        }
    return {
        "estimator": "cvae_nll_is",
        "decoder_sees_input": False,
        "settings": settings,
        "all_within_noise": all(s["within_noise"] for s in settings.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "results" / "reference")
    args = parser.parse_args()
    comparison = compare(
        load_results(args.dir / "p_y_given_z"), load_results(args.dir / "bf16")
    )
    path = args.dir / "precision.json"
    path.write_text(json.dumps(comparison, indent=1) + "\n")
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
