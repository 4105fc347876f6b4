"""Join study files that each hold some of the quadrant settings into one.

Usage (from the repository root)::

    python -m tools.merge_studies OUTPUT PART [PART ...]

A study (``cvae_helpers convergence`` or ``diversity``) run one setting at a time, with
``--quadrants 1`` and so on, writes one file per setting; for instance where a machine
can only take one setting's models at once. Every part must come from the same run: the
same fields and values apart from ``settings``, which are joined. A setting found in two
parts is an error, as is any other difference, so two runs cannot be mixed by mistake.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path


def merge_studies(parts: Sequence[dict]) -> dict:
    """One study with the ``settings`` of all ``parts``, which must agree on everything
    else."""
    if not parts:
        raise ValueError("No study to merge.")
    header = {key: value for key, value in parts[0].items() if key != "settings"}
    settings: dict = {}
    for index, part in enumerate(parts):
        other = {key: value for key, value in part.items() if key != "settings"}
        if other != header:
            differing = sorted(
                key
                for key in header.keys() | other.keys()
                if header.get(key) != other.get(key)
            )
            raise ValueError(
                f"Part {index} is from another run: it differs from part 0 in {differing}."
            )
        repeated = settings.keys() & part["settings"].keys()
        if repeated:
            raise ValueError(
                f"Setting(s) {sorted(repeated)} appear in more than one part."
            )
        settings.update(part["settings"])
    return {**header, "settings": dict(sorted(settings.items()))}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("parts", type=Path, nargs="+")
    args = parser.parse_args(argv)
    merged = merge_studies([json.loads(path.read_text()) for path in args.parts])
    args.output.write_text(json.dumps(merged, indent=2) + "\n")
    print(f"Wrote {args.output} (settings {', '.join(merged['settings'])})")


if __name__ == "__main__":
    main()
