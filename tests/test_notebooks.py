"""The chapters as files: each .ipynb is the output-free twin of its .md, listed in the
TOC, with a Colab install cell that points at the one repository URL in _config.yml."""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

from tools.notebook_outputs import cells_with_outputs
from tools.repo_url import (
    BOOK_REF_FILE,
    INSTALL_CELL,
    install_cell,
    pages_url,
    repository_url,
)

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
PAIRED_MARKDOWN = sorted(
    p for p in BOOK.glob("*.md") if "jupytext:" in p.read_text()[:300]
)


def _cells(notebook) -> list[tuple[str, str, tuple[str, ...]]]:
    return [
        (cell.cell_type, cell.source.strip(), tuple(cell.metadata.get("tags", [])))
        for cell in notebook.cells
    ]


def test_every_text_chapter_has_its_notebook_and_back():
    assert {p.stem for p in NOTEBOOKS} == {p.stem for p in PAIRED_MARKDOWN}
    assert len(NOTEBOOKS) >= 11


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_pair_in_sync_and_without_outputs(notebook):
    assert cells_with_outputs(notebook) == [], (
        f"{notebook.name} holds outputs; clear them (jupytext --sync writes none)"
    )
    markdown = jupytext.read(notebook.with_suffix(".md"))
    assert _cells(jupytext.read(notebook)) == _cells(markdown), (
        f"{notebook.name} and its .md differ; run: jupytext --sync {notebook.with_suffix('.md')}"
    )


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_cell_installs_the_commit_that_built_the_book(notebook):
    """The first code cell is install_cell() as written from _config.yml, the one
    place: it installs the package at the ref the book's build published, from the
    configured repository, and raises when pip fails."""
    first_code = next(
        c for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"
    )
    assert first_code.source.strip() == install_cell().strip(), (
        f"{notebook.name}: the first code cell must be the Colab install cell; "
        "run: make sync-repo-url"
    )
    assert "hide-input" in first_code.metadata.get("tags", [])


def test_the_install_cell_reads_the_build_s_ref_and_raises_when_pip_fails(
    tmp_path, monkeypatch
):
    """The cell, run where the package is missing: it installs REPO@<the published
    ref>, and a failed pip is a RuntimeError with pip's message, not a silent magic."""
    import builtins
    import io
    import subprocess
    import urllib.request

    cell = install_cell()
    assert f'BOOK = "{pages_url(repository_url())}"' in cell
    assert f'REPO = "{repository_url()}"' in cell and BOOK_REF_FILE in cell
    real_import, calls = builtins.__import__, []

    def no_package(name, *args, **kwargs):
        if name == "cvae_helpers":
            raise ModuleNotFoundError(name)
        return real_import(name, *args, **kwargs)

    def fake_pip(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 1, "", "ERROR: no network")

    monkeypatch.setattr(builtins, "__import__", no_package)
    monkeypatch.setattr(
        urllib.request, "urlopen", lambda *a, **k: io.BytesIO(b"0123abc\n")
    )
    monkeypatch.setattr(subprocess, "run", fake_pip)
    with pytest.raises(RuntimeError, match="ERROR: no network") as error:
        exec(compile(cell, "install_cell", "exec"), {})
    spec = f"cvae-helpers @ git+{repository_url()}@0123abc"
    assert calls[0][-1] == spec and spec in str(error.value)
    assert "run this cell again" in str(error.value)


def test_toc_lists_every_chapter_and_only_existing_files():
    toc = (ROOT / "_toc.yml").read_text()
    listed = set(re.findall(r"(?:file|root):\s*(\S+)", toc))
    for name in listed:
        assert (ROOT / f"{name}.md").is_file(), (
            f"_toc.yml names {name}, which does not exist"
        )
    assert {f"book/{p.stem}" for p in PAIRED_MARKDOWN} <= listed


def test_repository_url_is_read_from_the_config(tmp_path):
    config = tmp_path / "_config.yml"
    config.write_text(
        "title: x\nrepository:\n  branch: main\n  url: https://example.org/r\n"
    )
    assert repository_url(config) == "https://example.org/r"
    config.write_text("title: x\n")
    with pytest.raises(ValueError, match="repository.url"):
        repository_url(config)


def test_sync_repo_url_rewrites_both_files_of_a_pair(tmp_path):
    from tools.repo_url import sync_repo_url

    for suffix in (".md", ".ipynb"):
        source = (BOOK / f"01_data{suffix}").read_text()
        (tmp_path / f"01_data{suffix}").write_text(
            source.replace(repository_url(), "https://old/x")
        )
    assert sync_repo_url(tmp_path) == [tmp_path / "01_data.md"]
    for suffix in (".md", ".ipynb"):
        text = (tmp_path / f"01_data{suffix}").read_text()
        assert repository_url() in text and "https://old/x" not in text
    assert sync_repo_url(tmp_path) == []  # nothing left to change


def test_the_output_check_finds_cells_with_outputs(tmp_path):
    from tools.notebook_outputs import main

    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# title"),
            nbformat.v4.new_code_cell("1 + 1"),
            nbformat.v4.new_code_cell("2 + 2"),
        ]
    )
    clean = tmp_path / "clean.ipynb"
    nbformat.write(notebook, clean)
    notebook.cells[2].outputs = [
        nbformat.v4.new_output("execute_result", {"text/plain": "4"})
    ]
    notebook.cells[2].execution_count = 1
    dirty = tmp_path / "dirty.ipynb"
    nbformat.write(notebook, dirty)
    assert cells_with_outputs(clean) == [] and cells_with_outputs(dirty) == [2]
    assert main([str(clean)]) == 0 and main([str(clean), str(dirty)]) == 1


def test_the_introduction_lists_every_chapter():
    """Every chapter of the table of contents is linked from the introduction's list."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    intro = (BOOK / "intro.md").read_text()
    missing = [f for f in files if f"]({Path(f).name})" not in intro]
    assert not missing, f"book/intro.md does not link {missing}"


@pytest.mark.parametrize("chapter", sorted(BOOK.glob("*.md")), ids=lambda p: p.name)
def test_no_chapter_is_longer_than_380_lines(chapter):
    """A chapter holds one idea; a longer one is split (as the GSNN and diversity chapters
    were)."""
    text = INSTALL_CELL.sub("", chapter.read_text())  # generated, not the chapter's
    assert len(text.splitlines()) <= 380


def test_figures_are_numbered_captioned_and_referred_to_by_number():
    """Each {glue:figure} has a name, alt text, a caption and a cell that glues it, and the text
    refers to it by its number ({numref}); at least ten of them."""
    texts = {p.name: p.read_text() for p in sorted(BOOK.glob("*.md"))}
    directive = re.compile(
        r"```\{glue:figure\} (\S+)\n:name: (\S+)\n:alt: (.+?)\n\n(.+?)\n```", re.S
    )
    figures = [
        (n, *m.groups()) for n, t in texts.items() for m in directive.finditer(t)
    ]
    everything = "\n".join(texts.values())
    for chapter, glued, name, alt, caption in figures:
        # the directive's alt text is the image's (the drawing cell's output is removed)
        assert glued == name and len(caption.split()) >= 5, (chapter, name)
        assert len(alt.split()) >= 10, (chapter, name)
        assert f'glue_figure("{name}")' in texts[chapter], (chapter, name)
        assert f"{{numref}}`{name}`" in everything, (
            f"{chapter}: no {{numref}} of {name}"
        )
    assert len(figures) >= 10, [f[2] for f in figures]
