"""Every figure the book makes says what it shows, in alt text.

Two checks, one per stage:

- **chapters** (``python -m tools.alt_text book/*.md``; the unit tests and pre-commit
  run it): a code cell that draws a figure must carry alt text, in its
  ``mystnb.image.alt`` metadata, or, for an animation, as the ``alt=`` argument of
  ``animation_html``. A cell draws a figure when it calls ``plt``, IPython's ``Image``,
  ``pyro.render_model`` or a function of ``cvae_helpers.plotting`` /
  ``cvae_helpers.explorer`` whose return annotation is a figure or an animation.
- **built HTML** (``python -m tools.alt_text --html _build/html``; ``make book`` and
  ``make book-quick`` run it after the build): every ``<img>`` of every page has alt
  text that is not a file name. This catches what the chapter check cannot see, such as
  images inside HTML that a cell builds. (Without alt text, Sphinx writes the image's
  path as its ``alt``.)
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import jupytext

# Fewer words than this is a label ("figure", "grid of digits"), not a description.
MIN_ALT_WORDS = 5
FIGURE_RETURN = re.compile(r"\b(Figure|Animation)\b")
FILE_NAME = re.compile(r"(^|/)[^/\s]+\.(png|jpe?g|gif|svg|webp)$", re.I)


def figure_functions() -> set[str]:
    """Names of the package's public functions that return a figure or an animation."""
    from cvae_helpers import explorer, plotting

    names = set()
    for module in (plotting, explorer):
        for name, function in inspect.getmembers(module, inspect.isfunction):
            returns = inspect.signature(function).return_annotation
            if (
                function.__module__ == module.__name__
                and not name.startswith("_")
                and FIGURE_RETURN.search(str(returns))
            ):
                names.add(name)
    return names


def figure_call_pattern() -> re.Pattern:
    """Source text that draws a figure: matplotlib, an image file, Pyro's graph, a
    figure function."""
    names = "|".join(sorted(figure_functions()))
    return re.compile(rf"\bplt\.\w+\(|\bImage\(|\brender_model\(|\b({names})\(")


def animation_alt(source: str) -> str | None:
    """The literal ``alt=`` argument of an ``animation_html(...)`` call in ``source``,
    if any."""
    try:
        tree = ast.parse(source)
    except (
        SyntaxError
    ):  # IPython magics: such a cell has no animation_html call to read
        return None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "animation_html"
        ):
            for keyword in node.keywords:
                if keyword.arg == "alt":
                    try:
                        return ast.literal_eval(keyword.value)
                    except ValueError:
                        return None
    return None


def cell_alt(cell) -> str | None:
    """The alt text a code cell gives its figures (metadata first, then
    ``animation_html``)."""
    alt = cell.metadata.get("mystnb", {}).get("image", {}).get("alt")
    return alt if alt is not None else animation_alt(cell.source)


def describes(alt: str | None) -> bool:
    """Whether ``alt`` is a description (enough words), not missing, a label or a file
    name."""
    return (
        alt is not None
        and len(alt.split()) >= MIN_ALT_WORDS
        and FILE_NAME.search(alt.strip()) is None
    )


def chapter_problems(path: str | Path, pattern: re.Pattern | None = None) -> list[str]:
    """One line per figure-drawing code cell of the chapter ``path`` without a
    description."""
    pattern = pattern or figure_call_pattern()
    problems = []
    for index, cell in enumerate(jupytext.read(path).cells):
        if (
            cell.cell_type == "code"
            and pattern.search(cell.source)
            and not describes(cell_alt(cell))
        ):
            first_line = cell.source.strip().splitlines()[0]
            problems.append(
                f"{path}: cell {index} ({first_line!r}) draws a figure without alt text of at least "
                f"{MIN_ALT_WORDS} words; add `mystnb: image: alt:` to its metadata (see book/01_data.md)"
            )
    return problems


class _ImageAlts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, str | None]] = []  # (src or id, alt)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            found = dict(attrs)
            self.images.append(
                (found.get("src") or found.get("id") or "?", found.get("alt"))
            )


def html_problems(page: str, name: str = "page") -> list[str]:
    """One line per ``<img>`` of the HTML text ``page`` whose alt text is missing or a
    file name."""
    parser = _ImageAlts()
    parser.feed(page)
    return [
        f"{name}: <img {source[:80]}> has alt={alt!r}; give the cell that makes it alt text"
        for source, alt in parser.images
        if not alt or not alt.strip() or alt == source or FILE_NAME.search(alt.strip())
    ]


def built_book_problems(html_dir: str | Path) -> list[str]:
    """:func:`html_problems` for every page of a built book (theme files under
    ``_static`` aside)."""
    html_dir = Path(html_dir)
    pages = sorted(
        p
        for p in html_dir.rglob("*.html")
        if "_static" not in p.relative_to(html_dir).parts
    )
    if not pages:
        raise FileNotFoundError(
            f"no HTML pages under {html_dir}; build the book first (make book-quick)"
        )
    return [
        problem
        for page in pages
        for problem in html_problems(
            page.read_text(encoding="utf-8"), str(page.relative_to(html_dir))
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "chapters", nargs="*", type=Path, help="chapters (book/NAME.md) to check"
    )
    parser.add_argument(
        "--html", type=Path, help="a built book's HTML folder to check instead"
    )
    args = parser.parse_args(argv)
    if args.html is not None:
        problems = built_book_problems(args.html)
    else:
        pattern = figure_call_pattern()
        problems = [
            p for chapter in args.chapters for p in chapter_problems(chapter, pattern)
        ]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
