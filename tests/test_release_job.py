"""The release workflow's job (tools/release_job.py, .github/workflows/release.yml) and
its dry run.

The dry run runs the job's own commands at the ``dryrun`` budget (quick's sizes, fetched
from the release): the models step trains into a temporary cache,
``make release-assets`` exports them, ``publish --dry-run`` says what ``gh`` would do,
the summary step writes the table; then the intro chapter runs against the export served
on 127.0.0.1, with an empty checkpoint cache. Nothing contacts GitHub. The release holds
every file the real one does, the digit classifier included.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pooch
import pytest
import yaml

from cvae_helpers import pretrained
from cvae_helpers.checkpoints import load_checkpoint
from cvae_helpers.config import get_profile
from tools import release_job, release_publish
from tools.release_assets import reference_specs, summary_markdown

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
PROFILE = release_job.DRY_RUN_PROFILE
CHAPTER_MODELS = {
    f"{PROFILE}/q1_seed0/baseline.pt",
    f"{PROFILE}/q1_seed0/cvae_pyz.pt",
}  # the intro's


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    work = tmp_path_factory.mktemp("release-dry-run")
    return work, release_job.dry_run(work, classifier=True)


def test_the_dryrun_budget_is_quick_that_fetches():
    quick, dryrun = get_profile("quick"), get_profile(PROFILE)
    assert dryrun.fetch_pretrained and not quick.fetch_pretrained
    assert {k: v for k, v in dryrun.training_dict().items() if k != "name"} == {
        k: v for k, v in quick.training_dict().items() if k != "name"
    }
    assert "release" in dryrun.description


def test_dry_run_fetches_the_chapter_s_models_and_trains_none(dry):
    work, result = dry
    assert set(result.fetched) == CHAPTER_MODELS
    entries = {entry["checkpoint"]: entry for entry in result.manifest["models"]}
    for relative, sha256 in result.fetched.items():
        assert (
            sha256
            == entries[relative]["sha256"]
            == pooch.file_hash(work / "release" / entries[relative]["file"])
        )
        history = load_checkpoint(work / "reader-checkpoints" / relative)["history"]
        assert history["pretrained"]["url"].startswith("http://127.0.0.1:")
    assert result.chapter_output.count("loaded pretrained weights of") == 2
    assert "trained here" not in result.chapter_output
    assert result.requested[0] == "/manifest.json"


def test_the_release_holds_every_reference_model_trained_by_the_checked_out_commit(dry):
    _, result = dry
    manifest = result.manifest
    # 3 baselines, 3 x 2 CVAE decoders and the classifier
    assert len(manifest["models"]) == 10
    commit = release_job.head_commit()
    assert manifest["commit"] == commit and {
        m["commit"] for m in manifest["models"]
    } == {commit}
    assert {m["config"]["profile"]["name"] for m in manifest["models"]} == {PROFILE}


def test_job_summary_says_where_the_models_came_from_what_gh_would_do_and_every_sha256(
    dry,
):
    _, result = dry
    summary = result.summary
    assert (
        summary.index("### Reference models")
        < summary.index("### Release")
        < summary.index("### Release assets")
    )
    assert (
        "0 of 10 came from the checkpoint cache" in summary
        and "10 were trained in this job" in summary
    )
    assert "Nothing was downloaded." in summary
    assert (
        "Dry run: nothing was uploaded." in summary
        and "gh release create pretrained-v1" in summary
    )
    assert "Every SHA-256 and size below was computed again" in summary
    for entry in [*result.manifest["models"], result.manifest["reference"]]:
        assert (
            f"| `{entry['file']}` | {entry['size'] / 1e6:.2f} MB | `{entry['sha256']}` |"
            in summary
        )


def test_book_summary_after_the_chapter_says_the_models_came_from_the_release(dry):
    _, result = dry
    book = result.book_summary
    assert "found, its models trained by commit" in book
    assert "| the release, each file checked against its SHA-256 | 2:" in book
    assert "trained in CI" not in book


def test_models_step_uses_a_cache_that_holds_exactly_the_release_s_models(
    dry, monkeypatch, capsys
):
    work, _ = dry
    monkeypatch.delenv(release_job.SUMMARY_ENV, raising=False)
    markdown = release_job.prepare_models(
        PROFILE, work / "job-checkpoints", classifier=True
    )
    assert (
        "10 of 10 came from the checkpoint cache" in markdown
        and "0 were trained in this job." in markdown
    )
    assert "trained in this job (" not in markdown
    assert "reusing" not in capsys.readouterr().out  # not even loaded for training


def test_models_step_does_not_take_a_model_fetched_from_a_release(dry, tmp_path):
    work, _ = dry
    relative = f"{PROFILE}/q1_seed0/baseline.pt"
    (tmp_path / relative).parent.mkdir(parents=True)
    shutil.copy(
        work / "reader-checkpoints" / relative, tmp_path / relative
    )  # came from the release
    states = {
        m.relative: m.state
        for m in release_job.release_models(reference_specs(tmp_path, PROFILE), False)
    }
    assert states[relative] == "from a release"
    assert set(states.values()) == {"from a release", "missing"}


def test_the_release_needs_the_classifier_by_default(tmp_path):
    models = release_job.release_models(reference_specs(tmp_path, "full"))
    assert [m.relative for m in models][-1] == "full/classifier_seed0.pt" and len(
        models
    ) == 10
    assert {m.state for m in models} == {"missing"}


def test_book_summary_without_a_release_says_the_book_was_trained_in_ci_and_how_to_make_it(
    dry, tmp_path
):
    work, _ = dry
    relative = f"{PROFILE}/q2_seed0/cvae_pyxz.pt"
    (tmp_path / relative).parent.mkdir(parents=True)
    shutil.copy(
        work / "job-checkpoints" / relative, tmp_path / relative
    )  # trained, not fetched
    book = release_job.book_summary(tmp_path, PROFILE, "http://127.0.0.1:9/")
    assert "not available (could not download http://127.0.0.1:9/manifest.json" in book
    assert (
        f"| trained by this workflow (in this run, or in an earlier one whose cache it restored) | 1: `{relative}`"
        in book
    )
    assert "**This book was trained in CI**" in book
    assert (
        "Actions → release → Run workflow" in book
        and "git tag pretrained-v1 && git push origin pretrained-v1" in book
    )


def test_summary_refuses_a_file_that_differs_from_its_manifest(dry, tmp_path):
    work, result = dry
    release = Path(shutil.copytree(work / "release", tmp_path / "release"))
    changed = release / result.manifest["models"][0]["file"]
    changed.write_bytes(changed.read_bytes() + b"\0")
    with pytest.raises(SystemExit, match=changed.name):
        summary_markdown(release / "manifest.json")


def _fake_gh(tmp_path: Path, monkeypatch, view: str) -> Path:
    """A ``gh`` on the PATH that logs its arguments; ``release view`` answers
    ``view``."""
    log = tmp_path / "gh.log"
    script = tmp_path / "bin" / "gh"
    script.parent.mkdir()
    script.write_text(
        f'#!/bin/sh\necho "$*" >> {log}\nif [ "$2" = view ]; then\n{view}\nfi\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("GITHUB_REPOSITORY", "someone/fork")
    monkeypatch.delenv(release_job.SUMMARY_ENV, raising=False)
    return log


def test_publish_creates_the_release_at_the_commit_when_there_is_none(
    dry, tmp_path, monkeypatch
):
    work, result = dry
    log = _fake_gh(tmp_path, monkeypatch, "  echo 'release not found' >&2; exit 1")
    markdown = release_job.publish(work / "release", "pretrained-v1", "0123abc")
    calls = log.read_text().splitlines()
    assert calls[0] == "release view pretrained-v1 --json assets --jq .assets[].name"
    assert calls[1].startswith("release create pretrained-v1 ") and calls[1].endswith(
        "--target 0123abc"
    )
    names = {Path(word).name for word in calls[1].split() if word.startswith(str(work))}
    assert names == {
        "manifest.json",
        *(m["file"] for m in result.manifest["models"]),
        "reference-results.zip",
    }
    assert len(calls) == 2
    assert (
        "Created the release [`pretrained-v1`](https://github.com/someone/fork/releases/tag/pretrained-v1)"
        in markdown
    )


def test_publish_replaces_the_files_of_an_existing_release_and_drops_stale_ones(
    dry, tmp_path, monkeypatch
):
    work, _ = dry
    log = _fake_gh(
        tmp_path,
        monkeypatch,
        "  echo manifest.json; echo old_weights.safetensors; exit 0",
    )
    markdown = release_job.publish(work / "release", "pretrained-v2", "0123abc")
    calls = log.read_text().splitlines()
    assert calls[1].startswith("release upload pretrained-v2 ") and calls[1].endswith(
        "--clobber"
    )
    assert (
        calls[2] == "release delete-asset pretrained-v2 old_weights.safetensors --yes"
    )
    assert calls[3].startswith("release edit pretrained-v2 --notes-file ")
    assert (
        "1 that the manifest no longer lists removed (`old_weights.safetensors`)"
        in markdown
    )
    assert (
        "The package fetches from the release `pretrained-v1`" in markdown
    )  # not from v2


def test_release_workflow_runs_the_job_s_commands():
    workflow = yaml.safe_load((WORKFLOWS / "release.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["push"] == {"tags": ["pretrained-v*"]}
    assert (
        triggers["workflow_dispatch"]["inputs"]["tag"]["default"]
        == release_job.release_tag()
    )
    assert workflow["permissions"] == {"contents": "read"}
    build, publish_job = workflow["jobs"]["build"], workflow["jobs"]["publish"]
    assert set(workflow["jobs"]) == {"build", "publish"}
    # the write permission and the token: the publish job alone, which installs nothing
    assert "permissions" not in build and publish_job["permissions"] == {
        "contents": "write"
    }
    assert "github.token" not in yaml.safe_dump(build)
    assert publish_job["needs"] == "build"
    assert "default_branch" in publish_job["if"] and (
        "startsWith(github.ref, 'refs/tags/pretrained-v')" in publish_job["if"]
    )
    assert not any(
        "pip" in step.get("run", "") or "make" in step.get("run", "")
        for step in publish_job["steps"]
    )
    runs = [step.get("run", "") for step in build["steps"] + publish_job["steps"]]
    commands = release_job.job_commands(
        "python", PROFILE, Path("release"), "abc1234", "pretrained-v1", classifier=True
    )
    kinds = [
        " ".join(command[1:4]) if command[0] == "python" else " ".join(command[3:4])
        for _, command in commands
    ]
    assert kinds == [
        "-m tools.release_job models",
        "release-assets",
        "-m tools.release_publish --dir",
        "-m tools.release_assets --summary",
    ]
    for kind in kinds:
        assert any(kind in run for run in runs), f"release.yml runs no `{kind}`"
    assert 'RELEASE_COMMIT="$(git rev-parse --short HEAD)"' in "\n".join(runs)
    assert any(
        run.endswith('--summary release/manifest.json >> "$GITHUB_STEP_SUMMARY"')
        for run in runs
    )
    publish = next(
        step
        for step in publish_job["steps"]
        if "release_publish" in step.get("run", "")
    )
    assert (
        publish["env"]["GH_TOKEN"] == "${{ github.token }}"
        and publish["run"].startswith("python3 -m tools.release_publish")
        and "--dry-run" not in publish["run"]
    )
    # what the build job uploads is what the publish job downloads and publishes
    upload = next(s for s in build["steps"] if "upload-artifact@" in s.get("uses", ""))
    download = next(
        s for s in publish_job["steps"] if "download-artifact@" in s.get("uses", "")
    )
    assert upload["with"]["name"] == download["with"]["name"]
    assert upload["with"]["path"].rstrip("/") == download["with"]["path"] == "release"
    # the book workflow's cache, restored with the same path and key
    restore = next(
        step
        for step in build["steps"]
        if step.get("uses", "").startswith("actions/cache/restore@")
    )
    book = yaml.safe_load((WORKFLOWS / "book.yml").read_text())["jobs"]["build"][
        "steps"
    ]
    (cached,) = [step for step in book if step.get("name") == "Cache trained models"]
    assert restore["with"] == cached["with"]


def test_the_publish_step_runs_with_the_standard_library_alone():
    """The publish job installs nothing: its module imports no third-party package."""
    code = (
        "import sys; import tools.release_publish; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'cvae_helpers', 'torch', 'pooch', 'numpy', 'yaml'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=release_job.ROOT,
    ).stdout
    assert out.strip() == "[]"
    assert release_publish.MANIFEST_NAME == pretrained.MANIFEST_NAME
    assert release_publish.default_base_url() == pretrained.DEFAULT_BASE_URL


def test_publish_refuses_a_tag_the_package_would_not_fetch(dry):
    work, _ = dry
    with pytest.raises(SystemExit, match="not a release tag"):
        release_publish.publish(work / "release", "main", "0123abc", dry_run=True)


def test_book_workflow_writes_where_its_models_came_from():
    steps = yaml.safe_load((WORKFLOWS / "book.yml").read_text())["jobs"]["build"][
        "steps"
    ]
    names = [step.get("name") for step in steps]
    summary = steps[names.index("Where the models came from (job summary)")]
    assert names.index("make book") < names.index(
        "Where the models came from (job summary)"
    )
    # also after a failed step, and then also when .venv was never made
    assert (
        '.venv/bin/python -m tools.release_job book-summary >> "$GITHUB_STEP_SUMMARY"'
        in summary["run"]
    )
    assert "if [ -x .venv/bin/python ]" in summary["run"]
    assert summary["if"] == "${{ !cancelled() }}"
