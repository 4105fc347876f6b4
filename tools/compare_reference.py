"""Two reference runs side by side: every estimator of every model, old against new.

Usage (from the repository root)::

    python -m tools.compare_reference OLD_DIR NEW_DIR [--old-label L] [--new-label L]

Each folder is laid out as ``results/reference/`` is (``p_y_given_z/metrics_q*.json``,
``p_y_given_xz/...``); for the committed one of an earlier commit,
``git archive <commit> results/reference | tar -x -C /tmp/old``. Prints a Markdown table:
per decoder, setting and estimator, both values with their test-set standard errors, the
difference, and the difference in units of the two standard errors combined.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from cvae_helpers.config import DECODERS
from cvae_helpers.results import load_results, markdown_table

ROWS = {
    "NN": "baseline_nll",
    "CVAE MC": "cvae_nll_mc",
    "CVAE IS": "cvae_nll_is",
    "CVAE −ELBO": "cvae_neg_elbo",
}


def comparison_rows(old_dir: Path, new_dir: Path) -> list[list[object]]:
    """One row per decoder, setting and estimator found in both folders."""
    rows: list[list[object]] = []
    for sees_input, folder in ((d.sees_input, d.folder) for d in DECODERS.values()):
        old = {r["num_quadrant_inputs"]: r for r in load_results(old_dir / folder)}
        new = {r["num_quadrant_inputs"]: r for r in load_results(new_dir / folder)}
        for q in sorted(old.keys() & new.keys()):
            for label, key in ROWS.items():
                a, b = old[q][key], new[q][key]
                se = math.hypot(old[q][f"{key}_stderr"], new[q][f"{key}_stderr"])
                rows.append(
                    [DECODERS[sees_input].label, q, label,
                     f"{a:.2f} ± {old[q][key + '_stderr']:.2f}",
                     f"{b:.2f} ± {new[q][key + '_stderr']:.2f}",
                     f"{b - a:+.2f}", f"{(b - a) / se:+.1f}"]
                )  # fmt: skip
            rows.append(
                [DECODERS[sees_input].label, q, "CVAE epochs (best)",
                 f"{old[q]['epochs_cvae']} ({old[q]['best_epoch_cvae']})",
                 f"{new[q]['epochs_cvae']} ({new[q]['best_epoch_cvae']})", "", ""]
            )  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--old-label", default="old")
    parser.add_argument("--new-label", default="new")
    args = parser.parse_args()
    header = ["decoder", "quadrants", "estimator", args.old_label, args.new_label,
              "new − old", "in s.e. of the difference"]  # fmt: skip
    print(markdown_table(header, comparison_rows(args.old, args.new)), end="")


if __name__ == "__main__":
    main()
