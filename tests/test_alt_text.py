"""Alt text: every figure-drawing cell of every chapter has it, and both checks of
tools/alt_text find what they are meant to find."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib import animation

from cvae_helpers.plotting import animation_html
from tools.alt_text import (
    built_book_problems,
    chapter_problems,
    figure_functions,
    html_problems,
    main,
)

BOOK = Path(__file__).resolve().parent.parent / "book"
CHAPTERS = sorted(p for p in BOOK.glob("*.md") if "jupytext:" in p.read_text()[:300])

HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

"""


def _chapter(tmp_path: Path, *cells: str) -> Path:
    path = tmp_path / "chapter.md"
    path.write_text(HEADER + "\n".join(cells))
    return path


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_every_figure_cell_of_the_chapter_has_alt_text(chapter):
    assert chapter_problems(chapter) == []


def test_chapters_are_found():
    assert len(CHAPTERS) >= 11


def test_figure_functions_are_those_that_return_figures():
    names = figure_functions()
    assert {
        "completion_grid",
        "show_digits",
        "plot_histories",
        "draw_graphical_models",
        "training_animation",
        "digit_completion_grid",
    } <= names
    assert not names & {
        "compose",
        "to_rgb",
        "animation_html",
        "figure_to_data_uri",
        "static_explorer",
    }


def test_a_figure_cell_without_a_description_is_reported(tmp_path):
    described = (
        "```{code-cell} ipython3\n---\nmystnb:\n  image:\n"
        "    alt: Three masks side by side, one per setting.\n---\nplt.show()\n```\n"
    )
    bare = "```{code-cell} ipython3\ncompletion_grid(models)\nplt.show()\n```\n"
    label = "```{code-cell} ipython3\n---\nmystnb:\n  image:\n    alt: a figure\n---\ndraw_graphical_models()\n```\n"
    no_figure = "```{code-cell} ipython3\nprint('no figure here')\n```\n"
    problems = chapter_problems(_chapter(tmp_path, described, bare, label, no_figure))
    assert len(problems) == 2
    assert "cell 1 ('completion_grid(models)')" in problems[0]
    assert "cell 2 ('draw_graphical_models()')" in problems[1]
    assert main([str(tmp_path / "chapter.md")]) == 1


def test_an_animation_gets_its_alt_text_from_animation_html(tmp_path):
    with_alt = (
        "```{code-cell} ipython3\nanim = training_animation(a, b, c)\n"
        'HTML(animation_html(anim, alt=("One frame per epoch of CVAE samples "\n'
        '    "for held-out digits.")))\n```\n'
    )
    without = "```{code-cell} ipython3\nanim = training_animation(a, b, c)\nHTML(anim.to_jshtml())\n```\n"
    problems = chapter_problems(_chapter(tmp_path, with_alt, without))
    assert len(problems) == 1 and "cell 1" in problems[0]


def test_html_images_need_alt_text_that_is_not_a_file_name():
    page = """<main>
    <img alt="Colab logo" src="../_static/images/logo_colab.png">
    <img alt="Three masks side by side, one per setting." src="../_images/abc.png">
    <img alt="../_images/def.png" src="../_images/def.png">
    <img id="_anim_img42">
    <img alt="" src="data:image/png;base64,AAAA">
    </main>"""
    problems = html_problems(page, "book/x.html")
    assert len(problems) == 3
    assert "../_images/def.png" in problems[0]
    assert "_anim_img42" in problems[1]
    assert "data:image/png" in problems[2]


def test_the_built_book_check_reads_every_page_but_the_theme_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="build the book first"):
        built_book_problems(tmp_path)
    (tmp_path / "book").mkdir()
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "theme.html").write_text('<img src="logo.svg">')
    (tmp_path / "book" / "good.html").write_text(
        '<img alt="Ten test digits and their completions." src="a.png">'
    )
    assert built_book_problems(tmp_path) == []
    (tmp_path / "book" / "bad.html").write_text('<img alt="a.png" src="a.png">')
    problems = built_book_problems(tmp_path)
    assert len(problems) == 1 and problems[0].startswith("book/bad.html")
    assert main(["--html", str(tmp_path)]) == 1


def test_animation_html_puts_the_alt_text_on_the_frame():
    fig, ax = plt.subplots()
    image = ax.imshow([[0.0, 1.0]])
    anim = animation.FuncAnimation(fig, lambda i: [image], frames=2)
    player = animation_html(
        anim, alt='Two frames of a "test" <animation>, nothing else.'
    )
    plt.close(fig)
    assert html_problems(player) == []
    assert (
        'alt="Two frames of a &quot;test&quot; &lt;animation&gt;, nothing else."'
        in player
    )
    with pytest.raises(ValueError, match="alt text"):
        animation_html(anim, alt=" ")
