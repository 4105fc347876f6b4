"""Pretrained weights: export → serve on 127.0.0.1 → fetch → load, offline and verified.

The exported set is small: one setting (2 quadrants, default decoder) and the digit
classifier, trained on a few hundred MNIST images for two epochs, under a profile that
keeps the name "full" (the only budget that downloads) with small sizes, served by a
threading ``http.server`` started by the test.
"""

from __future__ import annotations

import functools
import json
import shutil
import socket
import threading
from contextlib import contextmanager
from dataclasses import replace
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pooch
import pytest
import torch

from cvae_helpers import pretrained, results
from cvae_helpers.checkpoints import load_checkpoint
from cvae_helpers.classifier import classifier_path, get_classifier
from cvae_helpers.config import RunSpec, get_profile
from cvae_helpers.pipeline import (
    cached_models,
    get_trained_models,
    metrics_record,
    restore_pretrained,
)
from tools.release_assets import REFERENCE, export_assets
from tools.repo_url import repository_url

ESTIMATES = ("baseline_nll", "cvae_nll_mc", "cvae_nll_is", "cvae_neg_elbo")


class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder and records the paths asked for; quiet."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.requested.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@contextmanager
def serve(folder: Path):
    """An HTTP server on 127.0.0.1 for ``folder``; yields it (``.url``,
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


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Models and the classifier trained here (cache ``trained/``) and their release
    assets (``release/``)."""
    root = tmp_path_factory.mktemp("pretrained")
    profile = get_profile(
        "full",
        train_size=256,
        val_size=128,
        test_size=64,
        max_epochs=2,
        batch_size=64,
        num_samples=4,
    )
    spec = RunSpec.create(2, profile, checkpoint_dir=root / "trained", device="cpu")
    models = get_trained_models(spec, progress=False, force_training=True)
    classifier = get_classifier(spec, progress=False, force_training=True)
    manifest = export_assets(
        [spec],
        root / "release",
        commit="abc1234",
        classifier_commit="cafe567",
        reference_dir=REFERENCE,
    )
    return spec, models, manifest, root / "release", classifier


@pytest.fixture
def release(exported, tmp_path):
    """A copy of the exported assets that a test may damage."""
    return Path(shutil.copytree(exported[3], tmp_path / "release"))


@pytest.fixture
def fresh(exported, tmp_path):
    """The exported spec with an empty checkpoint cache."""
    return replace(exported[0], checkpoint_dir=tmp_path / "cache")


def test_manifest_lists_each_file_with_its_sha256_configuration_and_commit(exported):
    spec, _, manifest, folder, _ = exported
    assert [m["checkpoint"] for m in manifest["models"]] == [
        "full/q2_seed0/baseline.pt",
        "full/q2_seed0/cvae_pyz.pt",
        "full/classifier_seed0.pt",
    ]
    for entry in manifest["models"]:
        path = folder / entry["file"]
        assert path.suffix == ".safetensors" and entry["sha256"] == pooch.file_hash(
            path
        )
        trained_by = (
            "cafe567"
            if entry["checkpoint"] == "full/classifier_seed0.pt"
            else "abc1234"
        )
        assert entry["size"] == path.stat().st_size and entry["commit"] == trained_by
        assert (
            entry["config"]
            == load_checkpoint(spec.checkpoint_dir / entry["checkpoint"])["config"]
        )
        assert {"torch", "pyro"} <= set(entry["versions"])
    assert manifest["reference"]["sha256"] == pooch.file_hash(
        folder / "reference-results.zip"
    )
    assert json.loads((folder / "manifest.json").read_text()) == manifest


def test_export_is_reproducible(exported, tmp_path):
    spec, _, manifest, _, _ = exported
    again = export_assets(
        [spec],
        tmp_path / "again",
        commit="abc1234",
        classifier_commit="cafe567",
        reference_dir=REFERENCE,
    )
    assert [m["sha256"] for m in again["models"]] == [
        m["sha256"] for m in manifest["models"]
    ]
    assert again["reference"]["sha256"] == manifest["reference"]["sha256"]


def test_round_trip_export_fetch_load_gives_identical_models(
    exported, fresh, monkeypatch, capsys
):
    spec, trained, manifest, folder, _ = exported
    with serve(folder) as server:
        monkeypatch.setenv(pretrained.BASE_URL_ENV, server.url)
        fetched = get_trained_models(fresh, progress=False)
    out = capsys.readouterr().out
    assert out.count("loaded pretrained weights of") == 2 and "Traceback" not in out
    for ours, theirs in (
        (trained.baseline, fetched.baseline),
        (trained.cvae, fetched.cvae),
    ):
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the same outputs, and the same evaluation, to the last bit
    inputs = trained.splits.test.inputs
    assert torch.equal(trained.baseline(inputs), fetched.baseline(inputs))
    noise = trained.cvae.latent_noise(3, len(inputs), torch.Generator().manual_seed(0))
    assert torch.equal(
        trained.cvae.sample(inputs, noise=noise),
        fetched.cvae.sample(inputs, noise=noise),
    )
    ours, theirs = metrics_record(trained), metrics_record(fetched)
    assert all(
        ours[k] == theirs[k] and ours[k + "_stderr"] == theirs[k + "_stderr"]
        for k in ESTIMATES
    )
    # the histories come along (the loss curves and the animation's snapshots)
    history = dict(fetched.cvae_history)
    assert history.pop("pretrained")["sha256"] == manifest["models"][1]["sha256"]
    snapshots = history.pop("snapshots")
    assert all(
        torch.equal(a, b)
        for a, b in zip(trained.cvae_history["snapshots"], snapshots, strict=True)
    )
    assert torch.equal(
        history.pop("snapshot_inputs"), trained.cvae_history["snapshot_inputs"]
    )
    assert history == {
        k: v for k, v in trained.cvae_history.items() if not k.startswith("snapshot")
    }
    assert fetched.origin() == (
        f"2 quadrants: baseline loaded pretrained weights (sha256 {manifest['models'][0]['sha256'][:12]}…), "
        f"CVAE loaded pretrained weights (sha256 {manifest['models'][1]['sha256'][:12]}…)"
    )
    assert "trained here in" in trained.origin()
    # stored as ordinary checkpoints: the next call reads the cache without any download
    # (and, with progress shown, says so)
    with serve(folder) as server:
        monkeypatch.setenv(pretrained.BASE_URL_ENV, server.url)
        get_trained_models(fresh, progress=True)
    assert (
        server.requested == []
        and "reusing CVAE, 2 quadrants" in capsys.readouterr().out
    )


def test_classifier_round_trip_gives_identical_weights_history_and_accuracy(
    exported, fresh, monkeypatch, capsys
):
    spec, _, manifest, folder, trained = exported
    entry = manifest["models"][-1]
    assert entry["file"] == "full_classifier_seed0.safetensors"
    assert entry["config"] == load_checkpoint(classifier_path(spec))["config"]
    with serve(folder) as server:
        monkeypatch.setenv(pretrained.BASE_URL_ENV, server.url)
        fetched = get_classifier(fresh, progress=False)
    assert server.requested == ["/manifest.json", "/" + entry["file"]]
    out = capsys.readouterr().out
    assert (
        out.startswith("loaded pretrained weights of classifier (sha256 ")
        and "Traceback" not in out
    )
    a, b = trained.net.state_dict(), fetched.net.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = dict(fetched.history)
    assert history.pop("pretrained")["sha256"] == entry["sha256"]
    assert (
        history == trained.history
    )  # the loss curves and early stopping's record, exactly
    # measured again on the test split after loading: the same digits, the same answer
    assert (fetched.test_accuracy, fetched.num_test_images) == (
        trained.test_accuracy,
        trained.num_test_images,
    )
    assert load_checkpoint(classifier_path(fresh))["status"] == "finished"


def test_forced_training_ignores_and_replaces_the_released_classifier(
    exported, fresh, monkeypatch, capsys
):
    with serve(exported[3]) as server:
        monkeypatch.setenv(pretrained.BASE_URL_ENV, server.url)
        monkeypatch.setenv(pretrained.FORCE_TRAINING_ENV, "1")
        trained = get_classifier(fresh, progress=False)
        assert server.requested == [] and "pretrained" not in trained.history
        assert "pretrained" not in load_checkpoint(classifier_path(fresh))["history"]
        monkeypatch.delenv(pretrained.FORCE_TRAINING_ENV)
        classifier_path(fresh).unlink()
        assert "pretrained" in get_classifier(fresh, progress=False).history  # fetched
        capsys.readouterr()
        retrained = get_classifier(fresh, progress=False, force_training=True)
    assert capsys.readouterr().out.startswith(
        "forced training: the cached classifier came from the release; training it here\n"
    )
    assert server.requested == ["/manifest.json", "/full_classifier_seed0.safetensors"]
    assert "pretrained" not in retrained.history
    assert "pretrained" not in load_checkpoint(classifier_path(fresh))["history"]


def test_downloads_are_kept_in_pooch_s_cache_and_not_fetched_twice(
    exported, fresh, tmp_path, monkeypatch
):
    """A second, empty checkpoint cache gets its models from the download cache: only
    the manifest, which has no known hash, is asked for again; a damaged cached file is
    downloaded again."""
    folder = exported[3]
    with serve(folder) as server:
        monkeypatch.setenv(pretrained.BASE_URL_ENV, server.url)
        get_trained_models(fresh, progress=False)
        kept = pretrained.download_cache(server.url)
        names = sorted(p.name for p in kept.iterdir())
        assert names == sorted(
            ["manifest.json"] + [m["file"] for m in exported[2]["models"][:2]]
        )
        assert kept.is_relative_to(tmp_path / "download-cache")
        server.requested.clear()
        get_trained_models(
            replace(fresh, checkpoint_dir=tmp_path / "two"), progress=False
        )
        assert server.requested == ["/manifest.json"]
        damaged = kept / "full_q2_seed0_baseline.safetensors"
        damaged.write_bytes(b"damaged")
        server.requested.clear()
        get_trained_models(
            replace(fresh, checkpoint_dir=tmp_path / "three"), progress=False
        )
        assert server.requested == [
            "/manifest.json",
            "/full_q2_seed0_baseline.safetensors",
        ]
    assert pooch.file_hash(damaged) == exported[2]["models"][0]["sha256"]


def test_tampered_file_is_refused_and_nothing_is_cached(release, fresh, monkeypatch):
    cvae_file = release / "full_q2_seed0_cvae_pyz.safetensors"
    data = bytearray(cvae_file.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    cvae_file.write_bytes(bytes(data))
    with serve(release) as server:
        monkeypatch.setenv(pretrained.BASE_URL_ENV, server.url)
        with pytest.raises(
            pretrained.PretrainedIntegrityError, match="SHA-256"
        ) as error:
            get_trained_models(fresh, progress=False)
    assert cvae_file.name in str(error.value) and pretrained.FORCE_TRAINING_ENV in str(
        error.value
    )
    assert (
        files_under(fresh.checkpoint_dir) == []
    )  # not even the baseline, whose file was fine


def test_missing_file_falls_back_to_training_with_one_line(
    release, fresh, monkeypatch, capsys
):
    (release / "full_q2_seed0_cvae_pyz.safetensors").unlink()
    with serve(release) as server:
        monkeypatch.setenv(pretrained.BASE_URL_ENV, server.url)
        models = get_trained_models(fresh, progress=False)
    out = capsys.readouterr().out
    notes = [
        line
        for line in out.splitlines()
        if line.startswith("pretrained weights not used")
    ]
    assert (
        len(notes) == 1
        and "HTTP 404" in notes[0]
        and notes[0].endswith("training here")
    )
    assert "Traceback" not in out
    assert "trained here in" in models.origin() and "pretrained" not in models.origin()


def test_manifest_from_another_configuration_is_refused(
    release, fresh, monkeypatch, capsys
):
    manifest_path = release / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["models"][0]["config"]["profile"]["max_epochs"] = 3
    manifest_path.write_text(json.dumps(manifest))
    with serve(release) as server:
        monkeypatch.setenv(pretrained.BASE_URL_ENV, server.url)
        restore_pretrained(fresh, cached_models(fresh))
        # asking for what the edited manifest claims: the weights file itself says
        # otherwise
        with pytest.raises(pretrained.PretrainedMismatchError, match="weights file"):
            pretrained.restore_checkpoints(
                [
                    pretrained.CachedModel(
                        "baseline",
                        cached_models(fresh)[0].path,
                        manifest["models"][0]["config"],
                        "full/q2_seed0/baseline.pt",
                    )
                ],
                server.url,
            )
    note = capsys.readouterr().out.strip()
    assert note.startswith(
        "pretrained weights not used: the release's full/q2_seed0/baseline.pt "
        "(manifest) was made by another configuration: profile.max_epochs: "
        "release has 3, wanted 2"
    )
    assert "\n" not in note and files_under(fresh.checkpoint_dir) == []


def test_offline_falls_back_with_one_line(fresh, monkeypatch, capsys):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(pretrained.BASE_URL_ENV, f"http://127.0.0.1:{port}")
    restore_pretrained(fresh, cached_models(fresh))
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith(
        f"pretrained weights not used: could not download http://127.0.0.1:{port}/manifest.json "
        "(ConnectionError); training here"
    )
    assert files_under(fresh.checkpoint_dir) == []


def test_quick_budget_and_forced_training_never_download(exported, fresh, monkeypatch):
    with serve(exported[3]) as server:
        monkeypatch.setenv(pretrained.BASE_URL_ENV, server.url)
        quick = replace(fresh, profile=get_profile("quick"))
        restore_pretrained(quick, cached_models(quick))
        restore_pretrained(fresh, cached_models(fresh), force_training=True)
        monkeypatch.setenv(pretrained.FORCE_TRAINING_ENV, "1")
        restore_pretrained(fresh, cached_models(fresh))
    assert server.requested == [] and files_under(fresh.checkpoint_dir) == []


def test_forced_training_drops_downloaded_models_only(
    exported, fresh, monkeypatch, capsys
):
    with serve(exported[3]) as server:
        monkeypatch.setenv(pretrained.BASE_URL_ENV, server.url)
        restore_pretrained(fresh, cached_models(fresh))
    baseline_path, cvae_path = (m.path for m in cached_models(fresh))
    shutil.copy(
        cached_models(exported[0])[0].path, baseline_path
    )  # a baseline trained here
    capsys.readouterr()
    restore_pretrained(fresh, cached_models(fresh), force_training=True)
    assert baseline_path.is_file() and not cvae_path.exists()
    assert capsys.readouterr().out == (
        "forced training: the cached CVAE p(y|z), 2 quadrants came from the release; training it here\n"
    )


def test_reference_results_reach_a_reader_without_a_checkout(
    exported, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # no results/reference above: as in Colab
    monkeypatch.delenv(results.REFERENCE_DIR_ENV, raising=False)
    monkeypatch.setenv("CVAE_CHECKPOINT_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CVAE_PROFILE", "full")
    results._fetched_reference_dir.cache_clear()
    with serve(exported[3]) as server:
        monkeypatch.setenv(pretrained.BASE_URL_ENV, server.url)
        assert results.load_reference() == results.load_reference(REFERENCE)
        assert results.load_reference_json("bench.json") == results.load_reference_json(
            "bench.json", REFERENCE
        )
    assert server.requested == [
        "/manifest.json",
        "/reference-results.zip",
    ]  # once per process
    assert "fetched the reference results (sha256" in capsys.readouterr().out
    # the quick budget never downloads
    monkeypatch.setenv("CVAE_PROFILE", "quick")
    monkeypatch.setenv("CVAE_CHECKPOINT_DIR", str(tmp_path / "other"))
    assert results.reference_dir() is None
    results._fetched_reference_dir.cache_clear()


def test_tampered_reference_results_are_refused(release, tmp_path):
    archive = release / "reference-results.zip"
    archive.write_bytes(archive.read_bytes() + b"\0")
    with serve(release) as server, pytest.raises(pretrained.PretrainedIntegrityError):
        pretrained.fetch_reference_results(tmp_path / "cache", server.url)
    assert files_under(tmp_path / "cache") == []


def test_export_names_missing_models(tmp_path):
    spec = RunSpec.create(1, "full", checkpoint_dir=tmp_path / "empty", device="cpu")
    with pytest.raises(SystemExit, match="make reference") as error:
        export_assets(
            [spec], tmp_path / "release", commit="abc1234", reference_dir=None
        )
    assert str(cached_models(spec)[1].path) in str(error.value)
    assert str(classifier_path(spec)) in str(error.value)  # in the same list


def test_default_address_is_a_release_of_the_repository():
    # make sync-repo-url moves it with repository.url (tools/repo_url.py LINKS)
    assert pretrained.DEFAULT_BASE_URL.startswith(
        repository_url() + "/releases/download/"
    )
    assert pretrained.base_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/"
