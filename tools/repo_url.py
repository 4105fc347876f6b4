"""Keep every chapter's Colab install cell, and the address of the pretrained weights, pointed
at ``repository.url`` of ``_config.yml``.

Usage (from the repository root): ``python -m tools.repo_url`` (what ``make sync-repo-url`` runs).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The Colab setup cell of every chapter installs the package from the repository whose URL is
# `repository.url` in _config.yml; tests/test_notebooks.py checks that they agree.
INSTALL_PATTERN = re.compile(r'(%pip install -q "cvae-helpers @ git\+)([^"]+)(")')
# The release that holds the pretrained weights (cvae_helpers/pretrained.py); tests/test_pretrained.py
# checks that it belongs to the same repository.
PRETRAINED_FILE = ROOT / "cvae_helpers" / "pretrained.py"
PRETRAINED_PATTERN = re.compile(r'^(DEFAULT_BASE_URL = ")(.+?)(/releases/download/[^"]*")', re.M)


def repository_url(config: str | Path | None = None) -> str:
    """``repository.url`` of the book's ``_config.yml`` (the one place the URL is set)."""
    path = Path(config) if config is not None else ROOT / "_config.yml"
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
    for md in sorted(Path(book_dir or ROOT / "book").glob("*.md")):
        text = md.read_text()
        new = INSTALL_PATTERN.sub(lambda m: m.group(1) + url + m.group(3), text)
        if new != text:
            md.write_text(new)
            changed.append(md)
            # the Markdown twin is the source here; --update keeps the notebook's cell ids
            jupytext_cli(["--to", "ipynb", "--update", "--quiet", str(md)])
    return changed


def sync_pretrained_url(path: str | Path = PRETRAINED_FILE) -> bool:
    """Point ``DEFAULT_BASE_URL`` in ``path`` at a release of :func:`repository_url`; whether it changed."""
    path = Path(path)
    text = path.read_text()
    new = PRETRAINED_PATTERN.sub(lambda m: m.group(1) + repository_url() + m.group(3), text)
    if new != text:
        path.write_text(new)
    return new != text


def main() -> None:
    for path in sync_repo_url():
        print(f"updated {path}")
    if sync_pretrained_url():
        print(f"updated {PRETRAINED_FILE}")


if __name__ == "__main__":
    main()
