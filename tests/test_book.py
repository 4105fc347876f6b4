"""The chapters' helpers: package source shown whole or in parts, and the setup
banner."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from cvae_helpers.book import setup_chapter, show_source, source_lines
from cvae_helpers.config import RunSpec
from cvae_helpers.training import TrainingSteps, fit

BOOK = Path(__file__).resolve().parent.parent / "book"
CODE_CELL = re.compile(r"```\{code-cell\}[^\n]*\n(.*?)```", re.S)
# The book's code column holds about 80 characters before it scrolls.
PAGE_WIDTH = 80


def test_source_slices_are_the_real_lines():
    whole = source_lines(fit)
    assert whole.startswith("def fit(") and "    return run.finish()" in whole
    part = source_lines(
        fit, start="    for epoch in run.epochs(", stop="    return run.finish()"
    )
    assert (
        part.startswith("    for epoch in run.epochs(") and "run.finish()" not in part
    )
    assert "steps.step(*batch)" in part and part in whole
    assert len(part.splitlines()) < len(whole.splitlines())
    assert (
        source_lines(fit, start="        if run.end_epoch(")
        .rstrip()
        .endswith("return run.finish()")
    )
    code = show_source(
        fit, start="    for epoch in run.epochs(", stop="    return run.finish()"
    )
    assert code.data == part
    # several objects, shown one after the other as one piece
    both = show_source(fit, setup_chapter).data
    assert both == source_lines(fit).rstrip("\n") + "\n\n" + source_lines(setup_chapter)


def test_a_stale_marker_is_an_error():
    with pytest.raises(ValueError, match="is not in the source of fit"):
        source_lines(fit, start="no such line")
    with pytest.raises(ValueError, match="does not follow"):
        source_lines(
            fit, start="    return run.finish()", stop="    for epoch in run.epochs("
        )


def test_setup_chapter_returns_the_run_spec(monkeypatch, capsys):
    monkeypatch.setenv("CVAE_PROFILE", "quick")
    spec = setup_chapter(seed=4)
    assert isinstance(spec, RunSpec) and spec.profile.name == "quick" and spec.seed == 4
    # one line: the budget and what it is for (the quick one warns), the device, the
    # seed
    assert capsys.readouterr().out == (
        "CVAE_PROFILE=quick (smoke test, numbers not meaningful), cpu, seed 4\n"
    )


class _KernelShell:
    """Stands in for a notebook kernel's shell: records the magics it is asked to run."""

    def __init__(self):
        from IPython.core.interactiveshell import InteractiveShell

        self.shell = InteractiveShell.instance()
        self.magics = []

    def run_line_magic(self, name, line):  # recorded only: a real kernel runs them
        self.magics.append((name, line))

    def __getattr__(self, name):
        return getattr(self.shell, name)


@pytest.fixture
def kernel(monkeypatch):
    import IPython

    shell = _KernelShell()
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    yield shell
    shell.shell.clear_instance()


def test_progress_shows_in_a_notebook_kernel_and_not_in_the_book_or_a_script(
    kernel, monkeypatch
):
    from cvae_helpers import book

    monkeypatch.delenv(book.PROGRESS_ENV, raising=False)
    assert book.show_progress()  # a kernel, nothing said: someone is watching
    monkeypatch.setenv(book.PROGRESS_ENV, "0")  # what the book's build sets
    assert not book.show_progress()
    monkeypatch.setenv(book.PROGRESS_ENV, "1")
    assert book.show_progress()
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: None)  # a plain script
    monkeypatch.delenv(book.PROGRESS_ENV)
    assert not book.show_progress()


def test_the_book_s_build_tells_its_kernels_to_stay_quiet(monkeypatch):
    """tools/sphinx_book_ref.py repeats two names it cannot import; they must agree."""
    from cvae_helpers import book
    from tools import repo_url, sphinx_book_ref

    assert sphinx_book_ref.PROGRESS_ENV == book.PROGRESS_ENV
    assert sphinx_book_ref.BOOK_REF_FILE == repo_url.BOOK_REF_FILE
    assert sphinx_book_ref.ROOT == repo_url.ROOT
    monkeypatch.setenv(sphinx_book_ref.REF_ENV, "v-test")
    assert sphinx_book_ref.book_ref() == "v-test"
    monkeypatch.delenv(sphinx_book_ref.REF_ENV)
    monkeypatch.delenv("GITHUB_SHA", raising=False)
    assert len(sphinx_book_ref.book_ref()) == 40  # the checkout's HEAD


def test_figures_are_drawn_at_twice_the_density_they_are_shown_at(kernel, monkeypatch):
    """setup_chapter asks the inline backend for retina PNGs: twice the pixels in each
    direction, with the displayed size in the output's metadata."""
    import matplotlib.pyplot as plt
    from IPython.core.formatters import format_display_data

    from cvae_helpers import book

    monkeypatch.setenv("CVAE_PROFILE", "quick")
    setup_chapter()
    assert ("matplotlib", "inline") in kernel.magics
    fig, ax = plt.subplots(figsize=(3, 2))  # an empty figure would not be drawn
    ax.plot([0, 1], [1, 0])
    data, metadata = format_display_data(fig)
    plt.close(fig)
    shown = metadata["image/png"]
    assert 290 <= shown["width"] <= 300  # 3 inches at 100 dpi, cropped to the ink
    png = data["image/png"]
    png = png if isinstance(png, bytes) else __import__("base64").b64decode(png)
    width = int.from_bytes(png[16:20], "big")  # the IHDR chunk's width
    assert abs(width - shown["width"] * book.FIGURE_DENSITY) <= 1


def test_a_method_is_shown_without_its_class_indent():
    shown = source_lines(TrainingSteps.step)
    assert shown.startswith("def step(self") and "\n    with self." in shown


def _code_cells(chapter: Path) -> list[ast.Module]:
    """The chapter's code cells, parsed (cell options, magics and shell lines
    dropped)."""
    cells = []
    for body in CODE_CELL.findall(chapter.read_text()):
        if body.startswith("---\n"):
            body = body.split("---\n", 2)[2]
        lines = body.splitlines()
        code = [line for line in lines if not line.startswith((":", "%", "!"))]
        cells.append(ast.parse("\n".join(code)))
    return cells


def displayed_sources(chapter: Path) -> list[tuple[str, str]]:
    """What each ``show_source(...)`` of ``chapter`` displays, as (call, text):
    the call evaluated with the chapter's own imports."""
    namespace: dict = {}
    cells = _code_cells(chapter)
    for node in (n for cell in cells for n in ast.walk(cell)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            try:
                exec(compile(ast.Module([node], []), str(chapter), "exec"), namespace)
            except ImportError:  # the Colab cell's google.colab
                pass
    shown = []
    for node in (n for cell in cells for n in ast.walk(cell)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "show_source":
            call = ast.unparse(node)
            shown.append(
                (call, eval(call, {**namespace, "show_source": show_source}).data)
            )
    return shown


def test_every_line_of_shown_source_fits_the_page():
    """The package source the chapters display, method bodies dedented, fits the
    book's code column: no line over PAGE_WIDTH characters."""
    too_long, count = [], 0
    for chapter in sorted(BOOK.glob("*.md")):
        for call, text in displayed_sources(chapter):
            count += 1
            too_long += [
                f"{chapter.name}: {call}: {line}"
                for line in text.splitlines()
                if len(line) > PAGE_WIDTH
            ]
    assert count > 40  # the chapters' calls were found and evaluated
    assert not too_long, "\n".join(too_long)
