"""The repository's own files agree with the project: the license, the citation file,
the published book's address (which follows repository.url), the workflows and the
pre-commit hooks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tools.repo_url import LINKS, expected_links, pages_url, repository_url, sync_links

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"


@pytest.mark.parametrize(
    ("repo", "pages"),
    [
        (
            "https://github.com/cvae-book/cvae-pyro-book",
            "https://cvae-book.github.io/cvae-pyro-book/",
        ),
        ("https://github.com/Some-One/book.git", "https://some-one.github.io/book/"),
        (
            "https://github.com/some-one/Some-One.github.io/",
            "https://some-one.github.io/",
        ),
    ],
)
def test_pages_url_follows_the_repository(repo, pages):
    assert pages_url(repo) == pages


def test_pages_url_needs_a_github_repository():
    with pytest.raises(ValueError, match="GitHub Pages"):
        pages_url("https://gitlab.com/owner/repo")


def test_readme_and_citation_name_the_configured_repository_and_book():
    wanted = expected_links()
    for name, pattern, kind in LINKS:
        match = pattern.search((ROOT / name).read_text())
        assert match, f"{name} lost the line that names the {kind} address"
        assert match.group(2) == wanted[kind], f"{name}: run make sync-repo-url"


def test_sync_links_rewrites_readme_and_citation(tmp_path):
    config = (
        (ROOT / "_config.yml")
        .read_text()
        .replace(repository_url(), "https://github.com/me/fork")
    )
    (tmp_path / "_config.yml").write_text(config)
    names = list(dict.fromkeys(name for name, _, _ in LINKS))
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text((ROOT / name).read_text())
    assert sync_links(tmp_path) == [tmp_path / name for name in names]
    readme = " ".join((tmp_path / "README.md").read_text().split())
    assert "the `book` workflow publishes it at <https://me.github.io/fork/>" in readme
    citation = (tmp_path / "CITATION.cff").read_text()
    assert 'repository-code: "https://github.com/me/fork"' in citation
    assert 'url: "https://me.github.io/fork/"' in citation
    assert (
        'DEFAULT_BASE_URL = "https://github.com/me/fork/releases/download/'
        in (tmp_path / "cvae_helpers" / "pretrained.py").read_text()
    )
    assert (
        expected_links(tmp_path / "_config.yml")["pages"]
        == "https://me.github.io/fork/"
    )
    assert sync_links(tmp_path) == []  # nothing left to change


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to
    hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_is_short_and_links_what_moved_out():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150, (
        "README.md is a newcomer's entry: at most 150 lines"
    )
    for section in (
        "## Two commands",
        "## Open the book",
        "## Layout",
        "## How to cite",
        "## License",
    ):
        assert section in readme
    # the logbook, the contributing guide and the release's internals live elsewhere;
    # each link must reach a file that exists and a heading that it holds
    links = re.findall(r"\]\(([^)#]+\.md)(?:#([^)]+))?\)", readme)
    targets = {(path, anchor) for path, anchor in links}
    assert ("CONTRIBUTING.md", "") in targets
    assert ("results/reference/notes.md", "measured-times-logbook") in targets
    assert ("CONTRIBUTING.md", "pretrained-weights-how-the-release-works") in targets
    for path, anchor in targets:
        text = (ROOT / path).read_text()
        headings = {
            _anchor(line.lstrip("#"))
            for line in text.splitlines()
            if line.startswith("#")
        }
        assert not anchor or anchor in headings, (
            f"README links {path}#{anchor}, which has no such heading"
        )


def test_measured_times_logbook_is_the_reference_readme_s_last_section():
    notes = (ROOT / "results" / "reference" / "notes.md").read_text()
    assert "## Measured times (logbook)" in notes
    # tools/reference_report.py ends results/reference/README.md with notes.md
    assert (ROOT / "results" / "reference" / "README.md").read_text().endswith(notes)


def test_license_file_is_the_license_pyproject_declares():
    declared = re.search(
        r'^license = \{ text = "([^"]+)" \}',
        (ROOT / "pyproject.toml").read_text(),
        re.M,
    )
    assert declared and declared.group(1) == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text


def test_citation_cites_the_book_and_references_the_paper():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert citation["license"] == "Apache-2.0"
    assert (
        citation["title"] == yaml.safe_load((ROOT / "_config.yml").read_text())["title"]
    )
    bib = (ROOT / "references.bib").read_text()
    paper_title = re.search(
        r"@inproceedings\{sohn2015cvae,.*?title\s*=\s*\{(.+?)\},", bib, re.S
    ).group(1)
    (paper,) = [ref for ref in citation["references"] if ref["title"] == paper_title]
    assert [a["family-names"] for a in paper["authors"]] == ["Sohn", "Lee", "Yan"]
    assert paper["year"] == 2015
    readme = (ROOT / "README.md").read_text()
    how_to_cite = readme[readme.index("## How to cite") :]
    assert "CITATION.cff" in how_to_cite and paper_title in how_to_cite


def test_the_workflows_run_the_readme_commands():
    tests = (WORKFLOWS / "tests.yml").read_text()
    book = (WORKFLOWS / "book.yml").read_text()
    assert "make test" in (ROOT / "README.md").read_text() and "run: make test" in tests
    assert "run: make book" in book
    for action in ("actions/upload-pages-artifact@", "actions/deploy-pages@"):
        assert action in book


# Steps that fail where the repository has no GitHub Pages (a new repository, a fork).
NEEDS_PAGES = ("actions/configure-pages", "actions/deploy-pages")


def test_the_book_workflow_builds_tests_and_caches_without_pages():
    """Only the deploy job touches Pages: the build job builds and checks the book and
    saves the checkpoint cache (which release.yml restores) with Pages off; the deploy
    job asks whether Pages is on before it deploys."""
    jobs = yaml.safe_load((WORKFLOWS / "book.yml").read_text())["jobs"]
    build = jobs["build"]
    assert not [
        step for step in build["steps"] if step.get("uses", "").startswith(NEEDS_PAGES)
    ]
    assert "pages" not in build.get("permissions", {})
    assert any(
        step.get("uses", "").startswith("actions/cache@")
        and step["with"]["path"] == "checkpoints"
        for step in build["steps"]
    )
    deploy = jobs["deploy"]
    assert deploy["needs"] == "build"
    check, deploy_step = deploy["steps"]
    assert 'gh api "repos/$GH_REPO/pages"' in check["run"]
    assert deploy_step["uses"].startswith("actions/deploy-pages@")
    assert deploy_step["if"] == "${{ steps.pages.outputs.on == 'true' }}"


# `uses: owner/action@<40 hex digits>  # vX.Y.Z`: the commit, and the version it is
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}  # v\d+\.\d+\.\d+$")


@pytest.mark.parametrize("workflow", sorted(WORKFLOWS.glob("*.yml")), ids=str)
def test_every_action_is_pinned_by_commit_with_its_version(workflow):
    uses = re.findall(r"^\s*(?:- )?uses: (.+)$", workflow.read_text(), re.M)
    assert uses, f"{workflow.name} uses no action"
    unpinned = [u for u in uses if not PINNED.match(u)]
    assert not unpinned, f"{workflow.name}: pin by commit SHA, # vX.Y.Z: {unpinned}"


def test_an_action_has_one_pin_in_every_workflow():
    pins = {}
    for workflow in WORKFLOWS.glob("*.yml"):
        for action, pin in re.findall(r"uses: ([^@\s]+)@(\S+)", workflow.read_text()):
            pins.setdefault(action.removesuffix("/restore"), set()).add(pin)
    assert all(len(found) == 1 for found in pins.values()), pins


def test_dependabot_keeps_the_action_pins_current():
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    (update,) = [
        u for u in config["updates"] if u["package-ecosystem"] == "github-actions"
    ]
    assert update["directory"] == "/" and update["schedule"]["interval"]


def test_pre_commit_hooks_run_offline():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    assert all(repo["repo"] == "local" for repo in config["repos"])
    assert all(hook["language"] == "system" for hook in hooks)
    entries = " ".join(hook["entry"] for hook in hooks)
    for command in (
        "ruff check",
        "ruff format --check",
        "jupytext --sync",
        "tools.notebook_outputs",
    ):
        assert command in entries


def test_readme_lists_every_module_and_each_imports_only_those_above_it():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("The package, one job per module", 1)[1].split("\n\n", 2)[1]
    listed = re.findall(r"^\| `(\w+)` \|", table, flags=re.MULTILINE)
    package = ROOT / "cvae_helpers"
    modules = {p.stem for p in package.glob("*.py")} - {"__init__", "__main__"}
    assert sorted(listed) == sorted(modules), "README's module table is the package"
    # the package's own imports, module level or inside a function; a parenthesised
    # list of names still names its module on the first line
    pattern = re.compile(r"^\s*from \.(\w*) import \(?([\w, ]*)", flags=re.MULTILINE)
    for module in listed:
        for origin, names in pattern.findall((package / f"{module}.py").read_text()):
            imported = [origin] if origin else [n.strip() for n in names.split(",")]
            for name in imported:
                assert listed.index(name) < listed.index(module), (
                    f"{module} imports {name}, which README lists below it"
                )
