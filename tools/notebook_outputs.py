"""Notebooks carry no outputs: the book executes the chapters itself, and outputs in git
are noise.

Usage: ``python -m tools.notebook_outputs book/*.ipynb`` (the pre-commit hook;
tests/test_notebooks.py uses :func:`cells_with_outputs`). Prints each offending notebook
and exits 1; ``jupytext --sync`` rewrites a notebook without outputs from its Markdown
twin.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def cells_with_outputs(path: str | Path) -> list[int]:
    """Indices of the code cells of the notebook ``path`` that hold outputs or an
    execution count."""
    notebook = nbformat.read(path, as_version=4)
    return [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        and (cell.outputs or cell.execution_count is not None)
    ]


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    found = {path: cells for path in paths if (cells := cells_with_outputs(path))}
    for path, cells in found.items():
        print(
            f"{path}: cells {cells} hold outputs; clear them (jupytext --sync {Path(path).with_suffix('.md')} "
            "rewrites the notebook without any)",
            file=sys.stderr,
        )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
