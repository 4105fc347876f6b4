"""A Sphinx extension for the book: what a page needs to know about the build that made
it. ``_config.yml`` loads it (``sphinx: local_extensions``).

- **The commit.** The build writes the commit it was made from into ``book-ref.txt`` at
  the root of the HTML (the chapters' Colab install cell, :func:`tools.repo_url.
  install_cell`, installs the package at that commit), and points the launch buttons
  (Colab, Binder) at the notebook of that same commit. The commit is
  ``$CVAE_BOOK_REF``, else ``$GITHUB_SHA`` (the book workflow), else the checkout's
  ``HEAD``; without any (no git), the buttons keep ``repository.branch`` and no file is
  written.
- **Quiet cells.** The kernels that execute the chapters inherit this process's
  environment: ``CVAE_PROGRESS=0`` tells :func:`cvae_helpers.book.show_progress` that
  nobody watches, so the built pages carry no progress bars.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# Loaded by Sphinx as a top-level module (local_extensions), where ``tools`` may not be
# importable: tools.repo_url's constants, repeated (tests/test_book.py checks).
ROOT = Path(__file__).resolve().parent.parent
BOOK_REF_FILE = "book-ref.txt"
REF_ENV = "CVAE_BOOK_REF"
PROGRESS_ENV = "CVAE_PROGRESS"  # cvae_helpers.book.PROGRESS_ENV (a test checks)


def book_ref() -> str | None:
    """The commit the book is built from, or ``None`` where none is known."""
    for name in (REF_ENV, "GITHUB_SHA"):
        if os.environ.get(name, "").strip():
            return os.environ[name].strip()
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def configure(app, config) -> None:
    os.environ[PROGRESS_ENV] = "0"
    app.book_ref = book_ref()
    if app.book_ref is not None:
        config.html_theme_options["repository_branch"] = app.book_ref


def write_ref(app, exception) -> None:
    if exception is None and app.builder.format == "html" and app.book_ref:
        Path(app.outdir, BOOK_REF_FILE).write_text(app.book_ref + "\n")


def setup(app) -> dict:
    app.connect("config-inited", configure)
    app.connect("build-finished", write_ref)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
