"""Keep everything that names the repository in step with ``repository.url`` of
``_config.yml``: every chapter's Colab install cell (written whole from
:func:`install_cell`, the one place it is), the book's GitHub Pages address in
README.md, the links of CITATION.cff and the address of the pretrained weights
(cvae_helpers/pretrained.py).

Usage (from the repository root): ``python -m tools.repo_url`` (what
``make sync-repo-url`` runs).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The Colab install cell: the first code cell of every chapter, written by
# install_cell() (tests/test_notebooks.py checks that each chapter holds it as written).
INSTALL_CELL = re.compile(
    r"(```\{code-cell\} ipython3\n:tags: \[hide-input\]\n\n)"
    r"(# Colab: install the helper package.*?\n)(```)",
    re.S,
)
# What the book's build writes at the root of the HTML (tools/sphinx_book_ref.py): the
# commit it was built from, which the install cells install.
BOOK_REF_FILE = "book-ref.txt"
# Outside the chapters, each file that names the repository or the published book, the
# pattern of that address (group 2) and whether it is the book's Pages address or the
# repository's.
LINKS = (
    # "Once the repository at `repository.url` has GitHub Pages turned on (...), the
    # `book` workflow publishes it at <ADDRESS>." (README.md, "Open the book")
    (
        "README.md",
        re.compile(r"(`book` workflow publishes it at\s+<)([^>]+)(>)"),
        "pages",
    ),
    (
        "CITATION.cff",
        re.compile(r'^(repository-code: ")([^"]+)(")', re.M),
        "repository",
    ),
    ("CITATION.cff", re.compile(r'^(url: ")([^"]+)(")', re.M), "pages"),
    # the release that holds the pretrained weights and the reference results
    (
        "cvae_helpers/pretrained.py",
        re.compile(r'^(DEFAULT_BASE_URL = ")(.+?)(/releases/download/[^"]*")', re.M),
        "repository",
    ),
)
GITHUB_REPO = re.compile(
    r"^https://github\.com/([A-Za-z0-9-]+)/([A-Za-z0-9._-]+?)(?:\.git)?/?$"
)


def repository_url(config: str | Path | None = None) -> str:
    """``repository.url`` of the book's ``_config.yml`` (the one place the URL is
    set)."""
    path = Path(config) if config is not None else ROOT / "_config.yml"
    match = re.search(
        r"^repository:\s*\n(?:\s+.*\n)*?\s+url:\s*(\S+)", path.read_text(), re.M
    )
    if match is None:
        raise ValueError(f"{path} has no repository.url")
    return match.group(1)


def repository_branch(config: str | Path | None = None) -> str:
    """``repository.branch`` of ``_config.yml`` (default ``main``)."""
    path = Path(config) if config is not None else ROOT / "_config.yml"
    match = re.search(
        r"^repository:\s*\n(?:\s+.*\n)*?\s+branch:\s*(\S+)", path.read_text(), re.M
    )
    return match.group(1) if match else "main"


def install_cell(config: str | Path | None = None) -> str:
    """The source of every chapter's Colab install cell, from ``_config.yml``.

    Where the package is missing (Colab), it installs the commit that built the
    published book, which the build wrote into ``book-ref.txt`` next to the pages, so
    that the code that runs is the code the page was made with; where no book is
    published (GitHub Pages off), the repository's branch, and it says so. A failed
    install raises, with pip's message and what to do, instead of the ``%pip`` magic's
    silent failure and a ``ModuleNotFoundError`` a cell later.
    """
    url = repository_url(config)
    return f"""\
# Colab: install the helper package at the commit that built this book (where it is
# installed, nothing happens). CONTRIBUTING.md, "The Colab install cell", says how.
try:
    import cvae_helpers
except ModuleNotFoundError:
    import subprocess
    import sys
    from urllib.request import urlopen

    BOOK = "{pages_url(url)}"
    REPO = "{url}"
    try:
        REF = urlopen(BOOK + "{BOOK_REF_FILE}", timeout=30).read().decode().strip()
    except OSError as error:
        REF = "{repository_branch(config)}"
        print(f"No published book at {{BOOK}} ({{error}}): installing {{REPO}}@{{REF}}.")
    SPEC = f"cvae-helpers @ git+{{REPO}}@{{REF}}"
    pip = [sys.executable, "-m", "pip", "install", "-q", SPEC]
    done = subprocess.run(pip, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"pip could not install {{SPEC}}:\\n{{done.stderr[-2000:]}}\\nCheck that the "
            "runtime is online, then run this cell again."
        ) from None
    import cvae_helpers
"""


def pages_url(repo_url: str) -> str:
    """The GitHub Pages address at which ``.github/workflows/book.yml`` publishes the
    book.

    ``https://github.com/OWNER/REPO`` publishes at ``https://owner.github.io/REPO/`` (a
    repository named ``OWNER.github.io`` at the root of that host).
    """
    match = GITHUB_REPO.match(repo_url)
    if match is None:
        raise ValueError(
            f"repository.url {repo_url!r} is not https://github.com/OWNER/REPO; "
            "the book workflow publishes to GitHub Pages, which needs a GitHub repository"
        )
    owner, repo = match.group(1).lower(), match.group(2)
    host = f"https://{owner}.github.io/"
    return host if repo.lower() == f"{owner}.github.io" else f"{host}{repo}/"


def expected_links(config: str | Path | None = None) -> dict[str, str]:
    """The address each kind of link in :data:`LINKS` must hold, from
    ``repository.url``."""
    url = repository_url(config)
    return {"repository": url, "pages": pages_url(url)}


def sync_links(root: str | Path | None = None) -> list[Path]:
    """Rewrite the addresses of :data:`LINKS` under ``root`` from its ``_config.yml``.

    Returns the files that changed.
    """
    root = Path(root) if root is not None else ROOT
    wanted = expected_links(root / "_config.yml")
    changed = []
    for name in dict.fromkeys(name for name, _, _ in LINKS):
        path = root / name
        text = new = path.read_text()
        for link_file, pattern, kind in LINKS:
            if link_file == name:
                if pattern.search(new) is None:
                    raise ValueError(
                        f"{path} no longer holds the line that names the {kind} address "
                        f"(pattern {pattern.pattern!r}); tools/repo_url.py LINKS needs updating"
                    )
                new = pattern.sub(
                    lambda m, k=kind: m.group(1) + wanted[k] + m.group(3), new
                )
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def sync_repo_url(
    book_dir: str | Path | None = None, config: str | Path | None = None
) -> list[Path]:
    """Write :func:`install_cell` into every chapter's install cell; re-pair the
    notebooks.

    Returns the Markdown chapters that changed.
    """
    from jupytext.cli import jupytext as jupytext_cli

    cell = install_cell(config)
    changed = []
    for md in sorted(Path(book_dir or ROOT / "book").glob("*.md")):
        text = md.read_text()
        new = INSTALL_CELL.sub(lambda m: m.group(1) + cell + m.group(3), text, count=1)
        if new != text:
            md.write_text(new)
            changed.append(md)
            # the Markdown twin is the source here; --update keeps the notebook's cell
            # ids
            jupytext_cli(["--to", "ipynb", "--update", "--quiet", str(md)])
    return changed


def main() -> None:
    for path in sync_repo_url() + sync_links():
        print(f"updated {path}")


if __name__ == "__main__":
    main()
