"""The release workflow's jobs (``.github/workflows/release.yml``), one command per step,
and its dry run, which runs the same commands here at a small budget without contacting
GitHub.

Usage (from the repository root)::

    # the build job (read-only token)
    python -m tools.release_job models [--profile full]      # 1. cached, or trained here
    make release-assets RELEASE_COMMIT=<commit>               # 2. files and manifest
    python -m tools.release_assets --summary release/manifest.json  # 4. sizes, SHA-256
    # the publish job (the write token; standard library only: tools/release_publish.py)
    python3 -m tools.release_publish --tag pretrained-v1 --target <sha> [--dry-run]  # 3.
    # elsewhere
    python -m tools.release_job book-summary      # the book workflow's summary
    python -m tools.release_job dry-run [--without-classifier]  # make release-dry-run

Steps 1 and 3 append their part of the job summary to ``$GITHUB_STEP_SUMMARY`` when it
is set; steps 4 and ``book-summary`` print theirs, which the workflows append to it.

The dry run (:func:`dry_run`): the job's steps 1 to 4 at the ``dryrun`` budget (quick's
sizes, but fetched from the release like the full budget) into a temporary folder,
``publish`` only saying which ``gh`` commands it would run; then a local HTTP server on
127.0.0.1 stands in for the release, and one chapter is executed against it with an
empty checkpoint cache. It checks that every model the chapter used was fetched, none
trained, and that each fetched file's SHA-256 is the manifest's and the served file's.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pooch

from cvae_helpers import pretrained
from cvae_helpers.checkpoints import CheckpointMismatchError, load_checkpoint
from cvae_helpers.config import RunSpec, default_checkpoint_dir, get_profile
from tools.release_assets import reference_checkpoints, reference_specs
from tools.release_publish import (  # noqa: F401 (re-exported: the dry run's step 3)
    append_summary,
    publish,
    release_files,
    release_tag,
    summary_markdown,
)

ROOT = Path(__file__).resolve().parent.parent
SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
DRY_RUN_PROFILE = "dryrun"
DRY_RUN_CHAPTER = ROOT / "book" / "intro.ipynb"
# What the dry run's job steps see as the release: nothing listens there, so a download
# that should not happen fails at once instead of reaching GitHub.
NOWHERE = "http://127.0.0.1:9/"


def head_commit(short: bool = True) -> str:
    """The checked-out commit (in the workflow: the commit it runs on)."""
    command = ["git", "rev-parse", *(["--short"] if short else []), "HEAD"]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.strip()


# --- 1. the reference models: from the checkpoint cache, or trained here
# ------------------------


@dataclass
class CachedModel:
    """One checkpoint the release needs and what the cache holds for it."""

    relative: str  # e.g. "full/q1_seed0/baseline.pt"
    path: Path
    config: dict
    state: str  # "ready", "missing", "unfinished" or "from a release"


def release_models(
    specs: Sequence[RunSpec], classifier: bool = True
) -> list[CachedModel]:
    """The checkpoints the release needs (each once) and the state of each in the cache.

    ``ready``: finished, made by exactly the configuration the code asks for, and
    trained (not fetched from an earlier release). A checkpoint made by another
    configuration is an error: the release workflow's cache is keyed by the package's
    code, so it cannot hold one.
    """
    models, seen = [], set()
    for relative, path, config in reference_checkpoints(specs, classifier):
        if relative in seen:
            continue
        seen.add(relative)
        state = "missing"
        if path.is_file():
            try:
                payload = load_checkpoint(path, config)
            except CheckpointMismatchError as error:
                raise SystemExit(
                    f"The checkpoint cache cannot be used for the release: {error}"
                ) from error
            if payload["status"] != "finished":
                state = "unfinished"
            elif payload["history"].get("pretrained") is not None:
                state = "from a release"
            else:
                state = "ready"
        models.append(CachedModel(relative, path, config, state))
    return models


def _trained(path: Path) -> str:
    history = load_checkpoint(path)["history"]
    return f"{len(history.get('train_loss', []))} epochs, {sum(history.get('epoch_seconds', [])) / 60:.1f} min"


def prepare_models(
    profile: str = "full",
    checkpoint_dir: str | Path | None = None,
    classifier: bool = True,
) -> str:
    """The job's step 1: use the reference models the checkpoint cache holds (in the
    workflow, the book workflow's cache restored), train the others here, never download
    any; returns (and appends to the job summary) a table that says where each came
    from."""
    from cvae_helpers.classifier import get_classifier
    from cvae_helpers.pipeline import get_trained_models

    specs = reference_specs(checkpoint_dir, profile)
    before = release_models(specs, classifier)
    to_train = [m for m in before if m.state != "ready"]
    started = time.perf_counter()
    if to_train:
        for (
            spec
        ) in specs:  # the cached ones are reused ("reusing ..."), the others trained
            get_trained_models(spec, progress=False, force_training=True)
        if classifier:
            get_classifier(specs[0], progress=False, force_training=True)
    minutes = (time.perf_counter() - started) / 60
    after = release_models(specs, classifier)
    not_ready = [m.relative for m in after if m.state != "ready"]
    if not_ready:
        raise SystemExit(
            f"Still not ready for the release after training: {', '.join(not_ready)}"
        )
    cache = (
        Path(checkpoint_dir) if checkpoint_dir is not None else default_checkpoint_dir()
    )
    rows = [
        f"| `{m.relative}` | "
        + (
            "cached"
            if m.state == "ready"
            else f"trained in this job ({_trained(m.path)}; the cache had: {m.state})"
        )
        + " |"
        for m in before
    ]
    lines = [
        f"### Reference models (budget `{profile}`)",
        "",
        f"{len(before) - len(to_train)} of {len(before)} came from the checkpoint cache (`{cache}`; in the "
        "workflow, the book workflow's cache, whose key is the hash of the package's code), "
        f"{len(to_train)} were trained in this job"
        + (f" in {minutes:.1f} min" if to_train else "")
        + ". Nothing was downloaded.",
        "",
        "| checkpoint | where from |",
        "|---|---|",
        *rows,
    ]
    markdown = "\n".join(lines) + "\n"
    append_summary(markdown)
    return markdown


# --- the book workflow's summary
# -----------------------------------------------------------------


def book_summary(
    checkpoint_dir: str | Path | None = None,
    profile: str = "full",
    url: str | None = None,
) -> str:
    """Where the models of a book build came from, as Markdown: the release (with their
    SHA-256) or training by the workflow, and, when the release does not exist, how to
    make it."""
    cache = (
        Path(checkpoint_dir) if checkpoint_dir is not None else default_checkpoint_dir()
    )
    fetched, trained, minutes = [], [], 0.0
    for path in sorted((cache / profile).rglob("*.pt")):
        history = load_checkpoint(path)["history"]
        relative = path.relative_to(cache).as_posix()
        if history.get("pretrained") is not None:
            fetched.append(
                f"`{relative}` (sha256 `{history['pretrained']['sha256'][:12]}…`)"
            )
        else:
            trained.append(f"`{relative}`")
            minutes += sum(history.get("epoch_seconds", [])) / 60
    try:
        manifest = pretrained.fetch_manifest(url=url)
        commits = sorted({m["commit"] for m in manifest.get("models", [])})
        release = f"found, its models trained by commit {', '.join(f'`{c}`' for c in commits)}"
        exists = True
    except pretrained.PretrainedError as error:
        release, exists = f"not available ({error})", False
    tag = release_tag()
    lines = [
        "### Where this build's models came from",
        "",
        f"The release `{pretrained.base_url(url)}`: {release}.",
        "",
        "| came from | models |",
        "|---|---|",
        f"| the release, each file checked against its SHA-256 | {len(fetched)}: {', '.join(fetched) or '-'} |",
        f"| trained by this workflow (in this run, or in an earlier one whose cache it restored) | "
        f"{len(trained)}: {', '.join(trained) or '-'} |",
        "",
    ]
    if trained and not exists:
        lines.append(
            f"**This book was trained in CI** ({minutes:.0f} min of training): no release holds the "
            "pretrained weights yet. To make it, run the `release` workflow (Actions → release → Run "
            f"workflow) or push its tag: `git tag {tag} && git push origin {tag}`. Later builds then "
            "fetch the weights instead of training."
        )
    elif trained:
        lines.append(
            f"{len(trained)} models ({minutes:.0f} min of training) are ones the release does not hold, or "
            "were trained because `CVAE_FORCE_TRAINING` was set."
        )
    elif not fetched:
        lines.append(f"The checkpoint cache `{cache / profile}` holds no models.")
    return "\n".join(lines) + "\n"


# --- the dry run
# ---------------------------------------------------------------------------------


class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder quietly and records the paths asked for."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.requested.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@contextmanager
def serve(folder: Path) -> Iterator[ThreadingHTTPServer]:
    """An HTTP server for ``folder`` on 127.0.0.1 at a free port (``.url``,
    ``.requested``)."""
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(folder))
    )
    server.requested, server.url = [], f"http://127.0.0.1:{server.server_port}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def job_commands(
    python: str,
    profile: str,
    release_dir: Path,
    commit: str,
    tag: str,
    *,
    classifier: bool,
) -> list[tuple[str, list[str]]]:
    """The release job's steps as release.yml runs them, with this machine's ``python``
    (the workflow's is ``.venv/bin/python``) and the dry run's budget, folder and
    options."""
    models = [python, "-m", "tools.release_job", "models", "--profile", profile]
    models += [] if classifier else ["--without-classifier"]
    # -o: the dry run uses the environment it runs in, and never installs one
    export = [
        "make",
        "-o",
        ".venv/.installed",
        "release-assets",
        "VENV=.venv",
        f"PY={python}",
    ]
    export += [
        f"RELEASE_DIR={release_dir}",
        f"RELEASE_PROFILE={profile}",
        f"RELEASE_COMMIT={commit}",
    ]
    export += [] if classifier else ["RELEASE_ARGS=--without-classifier"]
    publish_step = [
        python,
        "-m",
        "tools.release_publish",
        "--dir",
        str(release_dir),
        "--tag",
        tag,
    ]
    publish_step += ["--target", commit, "--dry-run"]
    summary = [
        python,
        "-m",
        "tools.release_assets",
        "--summary",
        str(release_dir / pretrained.MANIFEST_NAME),
    ]
    return [
        ("1. models", models),
        ("2. make release-assets", export),
        ("3. publish", publish_step),
        ("4. summary", summary),
    ]


@dataclass
class DryRun:
    """What the dry run did and found."""

    summary: str  # the job summary the release workflow would write
    book_summary: str  # what the book workflow would write after the chapter
    manifest: dict
    fetched: dict[
        str, str
    ]  # checkpoint (in the reader's cache) -> sha256 it was checked against
    requested: list[str]  # the paths the chapter's kernel asked the local release for
    chapter_output: str
    seconds: dict[str, float] = field(default_factory=dict)


def _execute_chapter(chapter: Path, env: dict[str, str], output: Path) -> str:
    """Run ``chapter`` in a fresh kernel with ``env``; returns its cells' printed
    text."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(chapter, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=1800,
        kernel_name="python3",
        resources={"metadata": {"path": str(chapter.parent)}},
    )
    try:
        client.execute(env=env)
    finally:
        nbformat.write(notebook, output)
    return "".join(
        out.get("text", "")
        for cell in notebook.cells
        for out in cell.get("outputs", [])
        if out.get("name") == "stdout"
    )


def dry_run(
    work: str | Path,
    *,
    profile: str = DRY_RUN_PROFILE,
    classifier: bool = True,
    chapter: Path = DRY_RUN_CHAPTER,
    python: str = sys.executable,
) -> DryRun:
    """The release job's commands at ``profile`` in ``work`` (its checkpoint cache, its
    ``release/`` and its summary), then ``chapter`` against ``release/`` served on
    127.0.0.1 with an empty checkpoint cache. Raises ``AssertionError`` if a model was
    trained for the chapter or a checksum does not hold, ``CalledProcessError`` if a
    step fails."""
    if not get_profile(profile).fetch_pretrained:
        raise ValueError(
            f"the {profile!r} budget never downloads: the dry run needs one that does ({DRY_RUN_PROFILE!r})"
        )
    work = Path(work)
    release, summary_file, reader_cache = (
        work / "release",
        work / "summary.md",
        work / "reader-checkpoints",
    )
    work.mkdir(parents=True, exist_ok=True)
    summary_file.write_text("")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    job_env = {
        **env,
        SUMMARY_ENV: str(summary_file),
        "CVAE_PROFILE": profile,
        "CVAE_CHECKPOINT_DIR": str(work / "job-checkpoints"),
        pretrained.BASE_URL_ENV: NOWHERE,
    }
    seconds = {}
    for name, command in job_commands(
        python, profile, release, head_commit(), release_tag(), classifier=classifier
    ):
        started = time.perf_counter()
        done = subprocess.run(
            command, cwd=ROOT, env=job_env, capture_output=True, text=True
        )
        seconds[name] = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(
                f"step {name} failed (exit status {done.returncode}): {' '.join(command)}\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
            )
        print(done.stdout, end="", file=sys.stderr)
        if (
            name == "4. summary"
        ):  # release.yml appends this step's output to the job summary
            with open(summary_file, "a") as summary:
                summary.write(done.stdout)
    manifest = json.loads((release / pretrained.MANIFEST_NAME).read_text())
    # the reader: an empty cache, the release on 127.0.0.1, one chapter
    with serve(release) as server:
        reader_env = {
            **env,
            "CVAE_PROFILE": profile,
            "CVAE_CHECKPOINT_DIR": str(reader_cache),
            pretrained.BASE_URL_ENV: server.url,
        }
        reader_env.pop(pretrained.FORCE_TRAINING_ENV, None)
        started = time.perf_counter()
        output = _execute_chapter(
            chapter, reader_env, work / f"{chapter.stem}.executed.ipynb"
        )
        seconds["chapter"] = time.perf_counter() - started
        requested = list(server.requested)
        # what the book workflow's summary step would write after this build
        book = book_summary(reader_cache, profile, server.url)
    entries = {entry["checkpoint"]: entry for entry in manifest["models"]}
    fetched = {}
    for path in sorted(reader_cache.rglob("*.pt")):
        relative = path.relative_to(reader_cache).as_posix()
        source = load_checkpoint(path)["history"].get("pretrained")
        assert source is not None, (
            f"{relative} was trained for the chapter, not fetched from the release"
        )
        entry = entries[relative]
        served = pooch.file_hash(release / entry["file"])
        assert source["sha256"] == entry["sha256"] == served, (
            f"{relative}: the SHA-256 did not hold"
        )
        fetched[relative] = source["sha256"]
    assert fetched, f"{chapter.name} fetched no model"
    assert "trained here" not in output and "training here" not in output, output
    wanted = {"/" + pretrained.MANIFEST_NAME} | {
        "/" + entries[r]["file"] for r in fetched
    }
    assert wanted <= set(requested), requested
    return DryRun(
        summary=summary_file.read_text(),
        book_summary=book,
        manifest=manifest,
        fetched=fetched,
        requested=requested,
        chapter_output=output,
        seconds=seconds,
    )


# --- the command line
# ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def budget(command: argparse.ArgumentParser, default: str) -> None:
        command.add_argument(
            "--profile", default=default, help=f"the budget (default: {default})"
        )
        command.add_argument(
            "--without-classifier",
            action="store_true",
            help="leave the digit classifier out (a release needs it)",
        )

    models = commands.add_parser(
        "models", help="1. the reference models: cached, or trained here"
    )
    budget(models, "full")
    models.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="default: $CVAE_CHECKPOINT_DIR",
    )
    book = commands.add_parser(
        "book-summary", help="where a book build's models came from (Markdown)"
    )
    book.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="default: $CVAE_CHECKPOINT_DIR",
    )
    book.add_argument("--profile", default="full")
    dry = commands.add_parser(
        "dry-run",
        help="the job at a small budget, offline, then one chapter against it",
    )
    budget(dry, DRY_RUN_PROFILE)
    dry.add_argument(
        "--work",
        type=Path,
        default=None,
        help="where to work (default: a temporary folder)",
    )
    dry.add_argument("--chapter", type=Path, default=DRY_RUN_CHAPTER)
    args = parser.parse_args(argv)

    if args.command == "models":
        prepare_models(args.profile, args.checkpoint_dir, not args.without_classifier)
    elif args.command == "book-summary":
        print(book_summary(args.checkpoint_dir, args.profile), end="")
    else:
        with tempfile.TemporaryDirectory(prefix="cvae-release-dry-run-") as tmp:
            started = time.perf_counter()
            result = dry_run(
                args.work or tmp,
                profile=args.profile,
                classifier=not args.without_classifier,
                chapter=args.chapter,
            )
            total = time.perf_counter() - started
        print("\n## The release job's summary (dry run)\n")
        print(result.summary)
        print(f"## What the book workflow would write after {args.chapter.name}\n")
        print(result.book_summary)
        steps = ", ".join(f"{name} {s:.0f} s" for name, s in result.seconds.items())
        print(
            f"Dry run passed in {total:.0f} s ({steps}): {len(result.fetched)} models fetched from "
            f"127.0.0.1 and checked against the manifest's SHA-256, none trained for {args.chapter.name}."
        )


if __name__ == "__main__":
    main()
