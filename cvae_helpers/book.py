"""Small conveniences for the chapters: the setup banner, showing package source, glue.

Every chapter starts with :func:`setup_chapter` and shows the code it explains with
:func:`show_source`, so the text always displays the code that actually runs.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

from .config import PROFILE_ENV, Profile, get_profile, project_root, resolve_device, set_seed


def setup_chapter(seed: int = 0, profile: str | None = None) -> Profile:
    """Seed everything, pick the budget (``$CVAE_PROFILE``, default full) and say which it is.

    Returns the :class:`~cvae_helpers.config.Profile` the chapter should use.
    """
    import matplotlib.pyplot as plt

    chosen = get_profile(profile)
    set_seed(seed)
    _inline_figures()
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "font.size": 10})
    device = resolve_device()
    if chosen.name == "quick":
        note = ("small subsets and two epochs, a smoke test: the numbers below are NOT the "
                "paper's; unset it for the full budget")
    else:
        note = "the full data and early stopping, as in the paper"
    print(f"Budget: {chosen.name} ({PROFILE_ENV}={chosen.name}): {note}. Device: {device}. "
          f"Seed: {seed}.")
    return chosen


def _inline_figures() -> None:
    """Draw figures into the notebook even where MPLBACKEND says otherwise (e.g. Agg in CI)."""
    try:
        from IPython import get_ipython
    except ModuleNotFoundError:
        return
    shell = get_ipython()
    if shell is not None and type(shell).__name__ != "TerminalInteractiveShell":
        shell.run_line_magic("matplotlib", "inline")


def show_source(obj: Any):
    """The source of a package function or class as highlighted code (the code that runs)."""
    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")


def glue(name: str, value: Any, display: bool = False) -> None:
    """``myst_nb.glue`` when it is installed (the book build), else nothing (plain Jupyter, Colab)."""
    try:
        from myst_nb import glue as myst_glue
    except ModuleNotFoundError:
        return
    myst_glue(name, value, display=display)


# The Colab setup cell of every chapter installs the package from the repository whose URL is
# `repository.url` in _config.yml; tests/test_notebooks.py checks that they agree.
INSTALL_PATTERN = re.compile(r'(%pip install -q "cvae-helpers @ git\+)([^"]+)(")')


def repository_url(config: str | Path | None = None) -> str:
    """``repository.url`` of the book's ``_config.yml`` (the one place the URL is set)."""
    path = Path(config) if config is not None else project_root() / "_config.yml"
    match = re.search(r"^repository:\s*\n(?:\s+.*\n)*?\s+url:\s*(\S+)", path.read_text(), re.M)
    if match is None:
        raise ValueError(f"{path} has no repository.url")
    return match.group(1)


def sync_repo_url(book_dir: str | Path | None = None) -> list[Path]:
    """Point every chapter's install cell at :func:`repository_url`; re-pair the notebooks.

    Returns the Markdown chapters that changed.
    """
    from jupytext.cli import jupytext as jupytext_cli

    url = repository_url()
    changed = []
    for md in sorted(Path(book_dir or project_root() / "book").glob("*.md")):
        text = md.read_text()
        new = INSTALL_PATTERN.sub(lambda m: m.group(1) + url + m.group(3), text)
        if new != text:
            md.write_text(new)
            changed.append(md)
            # the Markdown twin is the source here; --update keeps the notebook's cell ids
            jupytext_cli(["--to", "ipynb", "--update", "--quiet", str(md)])
    return changed


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["sync-repo-url"]:
        sys.exit("usage: python -m cvae_helpers.book sync-repo-url")
    for path in sync_repo_url():
        print(f"updated {path}")
