"""Step 3 of the release workflow, its publish job: create or update the release with
``gh``. The only step that holds the token that may write to the repository.

Usage (from the repository root)::

    python3 -m tools.release_publish --dir release --tag pretrained-v1 --target <sha>
    python3 -m tools.release_publish --summary release/manifest.json

It needs the standard library and ``gh`` only, so that the job that holds the write
token installs nothing: it runs the runner's own ``python3`` on the files the build job
uploaded. Before anything is uploaded, every file's SHA-256 and size are computed again
and compared with ``manifest.json``. ``tools/release_job.py`` (the build job's steps and
the dry run) uses the same functions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tools.repo_url import ROOT, repository_url

SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
MANIFEST_NAME = "manifest.json"  # cvae_helpers.pretrained.MANIFEST_NAME (a test checks)
# What a release's tag may be: the package fetches from one of these (pretrained-v1).
TAG_PATTERN = re.compile(r"pretrained-v[0-9]+")


def default_base_url() -> str:
    """``DEFAULT_BASE_URL`` of cvae_helpers/pretrained.py, read from its source (the
    package imports torch, which the publish job does not install)."""
    source = (ROOT / "cvae_helpers" / "pretrained.py").read_text()
    match = re.search(r'^DEFAULT_BASE_URL = "([^"]+)"', source, re.M)
    if match is None:
        raise ValueError("cvae_helpers/pretrained.py defines no DEFAULT_BASE_URL")
    return match.group(1)


def release_tag(url: str | None = None) -> str:
    """The tag of the release the package fetches from (``pretrained-v1``): read from
    ``DEFAULT_BASE_URL`` in cvae_helpers/pretrained.py, or from ``url``."""
    url = url or default_base_url()
    match = re.search(r"/releases/download/([^/]+)/?$", url)
    if match is None:
        raise ValueError(f"{url} is not the address of a GitHub release's files")
    return match.group(1)


def append_summary(markdown: str) -> None:
    """Print ``markdown`` and append it, with a blank line after it, to the job summary
    (``$GITHUB_STEP_SUMMARY``) if that is set."""
    markdown = markdown.rstrip("\n") + "\n\n"
    print(markdown, end="")
    if os.environ.get(SUMMARY_ENV):
        with open(os.environ[SUMMARY_ENV], "a") as summary:
            summary.write(markdown)


def _sha256(path: Path) -> str:
    """A file's SHA-256. The standard library's, not pooch's ``file_hash``: this module
    runs where nothing is installed (see its docstring); the files are a few MB."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def summary_markdown(manifest_path: str | Path, title: str = "Release assets") -> str:
    """The manifest's files with their sizes and SHA-256, as Markdown (a job summary,
    release notes). Every SHA-256 and size is computed again from the files next to the
    manifest; a file that is missing or differs is an error (``SystemExit``) that names
    it."""
    manifest_path = Path(manifest_path)
    folder, manifest = manifest_path.parent, json.loads(manifest_path.read_text())
    entries = [
        *manifest["models"],
        *([manifest["reference"]] if "reference" in manifest else []),
    ]
    wrong = []
    for entry in entries:
        path = folder / entry["file"]
        if not path.is_file():
            wrong.append(f"{entry['file']}: missing")
        elif (_sha256(path), path.stat().st_size) != (
            entry["sha256"],
            entry["size"],
        ):
            wrong.append(
                f"{entry['file']}: its SHA-256 or size differs from the manifest's"
            )
    if wrong:
        raise SystemExit(
            f"{manifest_path} does not describe the files next to it:\n  "
            + "\n  ".join(wrong)
        )
    budgets = sorted(
        {
            m["config"]["profile"]["name"]
            for m in manifest["models"]
            if "profile" in m["config"]
        }
    )
    commits = sorted({m["commit"] for m in manifest["models"]})
    total = sum(entry["size"] for entry in entries)
    lines = [
        f"### {title}",
        "",
        f"Budget {', '.join(f'`{b}`' for b in budgets) or 'unknown'}; trained by commit "
        f"{', '.join(f'`{c}`' for c in commits) or 'none'}, exported by commit "
        f"`{manifest.get('exported_by_commit', 'unknown')}` at {manifest['exported']}. "
        f"Every SHA-256 and size below was computed again from the files and matches `{manifest_path.name}`.",
        "",
        "| file | size | SHA-256 |",
        "|---|--:|---|",
        *(
            f"| `{e['file']}` | {e['size'] / 1e6:.2f} MB | `{e['sha256']}` |"
            for e in entries
        ),
        f"| `{manifest_path.name}` | {manifest_path.stat().st_size / 1e3:.1f} kB | (lists the others) |",
        f"| **in all** | **{(total + manifest_path.stat().st_size) / 1e6:.2f} MB** | {len(entries) + 1} files |",
    ]
    return "\n".join(lines) + "\n"


def release_files(folder: Path) -> list[Path]:
    """The manifest and every file it lists, checked against it
    (:func:`summary_markdown`)."""
    manifest_path = folder / MANIFEST_NAME
    summary_markdown(manifest_path)  # raises SystemExit if a file is missing or differs
    manifest = json.loads(manifest_path.read_text())
    entries = [
        *manifest["models"],
        *([manifest["reference"]] if "reference" in manifest else []),
    ]
    return [manifest_path, *(folder / entry["file"] for entry in entries)]


def publish(
    folder: str | Path,
    tag: str,
    target: str,
    *,
    dry_run: bool = False,
    repo: str | None = None,
) -> str:
    """The job's step 3: create the release ``tag`` (at commit ``target`` if the tag
    does not exist yet) with the files of ``folder``, or replace the files of the
    existing release and remove the ones the new manifest does not list. Uses the ``gh``
    of the runner (``GH_TOKEN``: the workflow's token). ``dry_run`` runs nothing and
    says what it would run."""
    if TAG_PATTERN.fullmatch(tag) is None:
        raise SystemExit(
            f"{tag!r} is not a release tag of this project ({TAG_PATTERN.pattern})"
        )
    folder = Path(folder)
    files = release_files(folder)
    names = [path.name for path in files]
    repo = (
        repo
        or os.environ.get("GITHUB_REPOSITORY")
        or repository_url().removeprefix("https://github.com/")
    )
    page = f"https://github.com/{repo}/releases/tag/{tag}"
    run_url = (
        f"{os.environ['GITHUB_SERVER_URL']}/{repo}/actions/runs/{os.environ['GITHUB_RUN_ID']}"
        if os.environ.get("GITHUB_RUN_ID") and os.environ.get("GITHUB_SERVER_URL")
        else None
    )
    notes_text = (
        f"Pretrained weights and reference results of the book, made by the `release` workflow"
        f"{f' ({run_url})' if run_url else ''} at commit `{target}`. `manifest.json` lists each file's "
        "SHA-256, size, configuration and the commit that trained it; the package checks every "
        "download against it.\n\n" + summary_markdown(folder / MANIFEST_NAME, "Files")
    )
    create = [
        "gh",
        "release",
        "create",
        tag,
        *map(str, files),
        "--title",
        f"Pretrained weights ({tag})",
    ]
    notes = tempfile.NamedTemporaryFile(
        "w", suffix=".md", prefix="release-notes-", delete=False
    )
    with notes:
        notes.write(notes_text)
    create += ["--notes-file", notes.name, "--target", target]
    upload = ["gh", "release", "upload", tag, *map(str, files), "--clobber"]
    edit = ["gh", "release", "edit", tag, "--notes-file", notes.name]
    view = ["gh", "release", "view", tag, "--json", "assets", "--jq", ".assets[].name"]
    lines = ["### Release", ""]
    if tag != release_tag():
        lines += [
            f"The package fetches from the release `{release_tag()}` (`DEFAULT_BASE_URL` in "
            f"`cvae_helpers/pretrained.py`), not from `{tag}`: point it at `{tag}` for readers to get "
            "these files.",
            "",
        ]
    if dry_run:
        shown = " ".join(view)
        lines.append(
            f"Dry run: nothing was uploaded. The job would run `{shown}`; then, if `{tag}` has no release, "
            f"`gh release create {tag} <{len(files)} files> --target {target}`, else "
            f"`gh release upload {tag} <{len(files)} files> --clobber`, delete the assets the manifest "
            f"no longer lists, and `gh release edit {tag} --notes-file <notes>`. Its page: {page}"
        )
    else:
        found = subprocess.run(view, capture_output=True, text=True)
        if found.returncode == 0:
            existing = found.stdout.split()
            subprocess.run(upload, check=True)
            stale = [name for name in existing if name not in names]
            for name in stale:
                subprocess.run(
                    ["gh", "release", "delete-asset", tag, name, "--yes"], check=True
                )
            subprocess.run(edit, check=True)
            lines.append(
                f"Updated the release [`{tag}`]({page}): {len(files)} files uploaded (replacing those of the "
                f"same name), {len(stale)} that the manifest no longer lists removed"
                + (f" ({', '.join(f'`{n}`' for n in stale)})" if stale else "")
                + "."
            )
        elif "release not found" in found.stderr:
            subprocess.run(create, check=True)
            lines.append(
                f"Created the release [`{tag}`]({page}) at commit `{target}` with {len(files)} files."
            )
        else:
            raise SystemExit(f"`{' '.join(view)}` failed: {found.stderr.strip()}")
    Path(notes.name).unlink()
    markdown = "\n".join(lines) + "\n"
    append_summary(markdown)
    return markdown


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "release")
    parser.add_argument("--tag", default=None, help="default: the package's release")
    parser.add_argument("--target", default=None, help="the commit a new tag points at")
    parser.add_argument(
        "--dry-run", action="store_true", help="run nothing; say what would run"
    )
    parser.add_argument(
        "--summary",
        type=Path,
        default=None,
        help="only print the sizes and SHA-256 of this manifest's files",
    )
    args = parser.parse_args(argv)
    if args.summary is not None:
        print(summary_markdown(args.summary), end="")
        return
    if args.target is None:
        parser.error("--target is required")
    publish(args.dir, args.tag or release_tag(), args.target, dry_run=args.dry_run)


if __name__ == "__main__":
    main()
