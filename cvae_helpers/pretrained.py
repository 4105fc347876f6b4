"""Pretrained weights and reference results from the release assets, verified by
SHA-256.

A release holds ``manifest.json`` (each file's SHA-256, size, configuration and the
commit that trained it), one ``.safetensors`` file per reference model and the digit
classifier (weights and history tensors, no pickle; configuration, history and versions
in its metadata), and ``reference-results.zip``, the committed ``results/reference/``.
``tools/release_assets.py`` (``make release-assets``) writes them. Files are downloaded
with ``pooch`` into :func:`download_cache`, checked against the manifest, and only then
written to the checkpoint cache as ordinary checkpoints (whose configuration check
applies to them as to any other).

Environment: ``CVAE_PRETRAINED_URL`` (default :data:`DEFAULT_BASE_URL`),
``CVAE_DOWNLOAD_CACHE`` (default: pooch's cache folder for ``cvae-helpers``) and
``CVAE_FORCE_TRAINING`` (``1``: train instead of downloading, and retrain a cached model
that came from a download, as ``--force-training`` does; ``make reference`` sets it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoints import config_diff, load_checkpoint, save_checkpoint

# The one place the assets' address is written: the release of repository.url
# (_config.yml) tagged `pretrained-v1`. tests/test_pretrained.py checks that it follows
# repository.url.
DEFAULT_BASE_URL = "https://github.com/cvae-book/cvae-pyro-book/releases/download/pretrained-v1/"  # fmt: skip
BASE_URL_ENV = "CVAE_PRETRAINED_URL"
DOWNLOAD_CACHE_ENV = "CVAE_DOWNLOAD_CACHE"
FORCE_TRAINING_ENV = "CVAE_FORCE_TRAINING"
MANIFEST_NAME = "manifest.json"
REFERENCE_ARCHIVE = "reference-results.zip"
MANIFEST_FORMAT = 1
DOWNLOAD_TIMEOUT_S = 60
# Tensors of the training history (the animation's snapshots) travel in the weights file
# under this prefix; the model's weights under MODEL_PREFIX.
MODEL_PREFIX, HISTORY_PREFIX = "model.", "history."
# The one metadata key of a weights file: a JSON object (safetensors writes several keys
# in a random order, which would change a file's SHA-256 from one export to the next).
METADATA_KEY = "cvae_helpers"


class PretrainedError(ValueError):
    """Pretrained weights could not be used."""


class PretrainedUnavailableError(PretrainedError):
    """No network, no such release, or no file for this configuration: train instead."""


class PretrainedMismatchError(PretrainedError):
    """The release's file was made by another configuration than the one asked for."""


class PretrainedIntegrityError(PretrainedError):
    """A downloaded file does not match the manifest's SHA-256: it was changed or
    damaged."""


def base_url(url: str | None = None) -> str:
    """``url`` if given, else ``$CVAE_PRETRAINED_URL``, else :data:`DEFAULT_BASE_URL`;
    ends in ``/``."""
    url = url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return url if url.endswith("/") else url + "/"


def force_training(force: bool | None = None) -> bool:
    """``force`` if given, else whether ``$CVAE_FORCE_TRAINING`` is set to something
    true."""
    if force is not None:
        return force
    setting = os.environ.get(FORCE_TRAINING_ENV, "").strip().lower()
    return setting not in ("", "0", "false", "no")


def download_cache(url: str | None = None) -> Path:
    """The folder that keeps the files downloaded from the release at ``url``:
    ``$CVAE_DOWNLOAD_CACHE``, else pooch's cache folder for ``cvae-helpers``, one
    subfolder per release address (two releases may hold files of the same name)."""
    import pooch

    root = os.environ.get(DOWNLOAD_CACHE_ENV) or pooch.os_cache("cvae-helpers")
    return Path(root) / re.sub(r"[^A-Za-z0-9._-]+", "_", base_url(url)).strip("_")


def asset_name(relative_checkpoint: str | Path) -> str:
    """The release's flat file name of a checkpoint: ``full/q1_seed0/baseline.pt`` →
    ``full_q1_seed0_baseline.safetensors`` (release assets cannot live in folders)."""
    return (
        str(Path(relative_checkpoint).with_suffix(".safetensors"))
        .replace(os.sep, "_")
        .replace("/", "_")
    )


# --- writing (tools/release_assets.py) ---


def checkpoint_to_safetensors(payload: dict, path: str | Path, commit: str) -> None:
    """Write a finished checkpoint's weights and history tensors to ``path``
    (safetensors); the metadata carries the configuration, the rest of the history, the
    versions and ``commit``. The same checkpoint always gives the same bytes."""
    from safetensors.torch import save_file

    if payload.get("status") != "finished":
        raise ValueError(
            "Only finished checkpoints are exported (this one is still training)."
        )
    tensors = {
        MODEL_PREFIX + k: v.detach().cpu().contiguous()
        for k, v in payload["model_state"].items()
    }
    history = dict(payload["history"])
    history.pop("pretrained", None)
    if "snapshots" in history:  # a list of (samples, k, 784) tensors, one per epoch
        history["snapshots"] = torch.stack(history["snapshots"])
    for key in ("snapshots", "snapshot_inputs"):
        if key in history:
            tensors[HISTORY_PREFIX + key] = history.pop(key).contiguous()
    described = {
        "format_version": MANIFEST_FORMAT,
        "config": payload["config"],
        "history": history,
        "epoch": payload["epoch"],
        "versions": payload.get("versions", {}),
        "commit": commit,
    }
    save_file(
        tensors,
        str(path),
        metadata={METADATA_KEY: json.dumps(described, sort_keys=True)},
    )


def safetensors_to_checkpoint(path: str | Path, provenance: dict) -> dict:
    """A finished checkpoint (the payload
    :func:`~cvae_helpers.checkpoints.save_checkpoint` writes) from a weights file;
    ``provenance`` (sha256, url, commit) goes into its history, where
    :meth:`~cvae_helpers.pipeline.TrainedModels.origin` finds it."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = json.loads((handle.metadata() or {}).get(METADATA_KEY, "{}"))
    if metadata.get("format_version") != MANIFEST_FORMAT:
        raise PretrainedError(
            f"{path} is not a weights file of this project (format "
            f"{metadata.get('format_version')!r}, expected {MANIFEST_FORMAT})."
        )
    tensors = load_file(str(path))
    history = metadata["history"]
    if HISTORY_PREFIX + "snapshots" in tensors:
        history["snapshots"] = list(tensors[HISTORY_PREFIX + "snapshots"].unbind(0))
    if HISTORY_PREFIX + "snapshot_inputs" in tensors:
        history["snapshot_inputs"] = tensors[HISTORY_PREFIX + "snapshot_inputs"]
    history["pretrained"] = dict(provenance)
    model_state = {
        k[len(MODEL_PREFIX) :]: v
        for k, v in tensors.items()
        if k.startswith(MODEL_PREFIX)
    }
    return {
        "config": metadata["config"],
        "status": "finished",
        "epoch": metadata["epoch"],
        "history": history,
        "model_state": model_state,
        "optimizer_state": None,
        "best_state": None,
        "bad_epochs": 0,
        "rng": None,
    }


# --- fetching ---


def _download(url: str, folder: Path, name: str, sha256: str | None) -> Path:
    """``url`` into ``folder/name`` with pooch, checked against ``sha256`` when one is
    given."""
    import pooch
    import requests

    # this module says in one line what it fetched
    pooch.get_logger().setLevel("WARNING")
    try:
        return Path(
            pooch.retrieve(
                url,
                known_hash=f"sha256:{sha256}" if sha256 else None,
                fname=name,
                path=folder,
                progressbar=False,
                downloader=pooch.HTTPDownloader(timeout=DOWNLOAD_TIMEOUT_S),
            )
        )
    except requests.exceptions.RequestException as error:
        reason = (
            f"HTTP {error.response.status_code}"
            if error.response is not None
            else type(error).__name__
        )
        raise PretrainedUnavailableError(
            f"could not download {url} ({reason})"
        ) from error
    except ValueError as error:  # pooch's hash mismatch
        raise PretrainedIntegrityError(
            f"{url} does not match the SHA-256 its manifest lists ({sha256}): the file was "
            f"changed or damaged after it was exported, and nothing of it was stored. Fetch it "
            f"again later, or set {FORCE_TRAINING_ENV}=1 to train here instead."
        ) from error


def fetch_manifest(folder: Path | None = None, url: str | None = None) -> dict:
    """Download and read the release's manifest into ``folder`` (default:
    :func:`download_cache`). It has no known hash, so it is downloaded every time: a
    release that changed is seen at once."""
    address = base_url(url) + MANIFEST_NAME
    folder = Path(folder) if folder is not None else download_cache(url)
    (folder / MANIFEST_NAME).unlink(missing_ok=True)
    path = _download(address, folder, MANIFEST_NAME, None)
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PretrainedUnavailableError(
            f"{address} is not a manifest ({error})"
        ) from error
    found = manifest.get("format_version") if isinstance(manifest, dict) else None
    if found != MANIFEST_FORMAT:
        raise PretrainedUnavailableError(
            f"{address} has manifest format {found!r}; this package reads format {MANIFEST_FORMAT}"
        )
    return manifest


@dataclass(frozen=True)
class CachedModel:
    """One model's place in the checkpoint cache: its label, its file, the configuration
    it must have (its cache key) and its path inside the cache, e.g.
    ``"full/q1_seed0/baseline.pt"`` (the release's name for it)."""

    label: str
    path: Path
    config: dict
    relative: str


def restore_checkpoints(
    wanted: Sequence[CachedModel], url: str | None = None
) -> list[dict]:
    """Download the release's weights of ``wanted``, verify them, and store them as
    checkpoints; returns each file's manifest entry.

    All files are downloaded into :func:`download_cache` (one there that matches its
    SHA-256 is not downloaded again) and checked (SHA-256 against the manifest,
    configuration against ``wanted``) before any is written to the checkpoint cache, so
    a failure leaves that cache as it was. Raises :class:`PretrainedUnavailableError`,
    :class:`PretrainedMismatchError` or :class:`PretrainedIntegrityError`.
    """
    folder = download_cache(url)
    manifest = fetch_manifest(folder, url)
    entries = {entry["checkpoint"]: entry for entry in manifest.get("models", [])}
    restored = []
    for item in wanted:
        entry = entries.get(item.relative)
        if entry is None:
            raise PretrainedUnavailableError(
                f"the release has no weights for {item.relative}"
            )
        _check_config(entry["config"], item, "manifest")
        path = _download(
            base_url(url) + entry["file"], folder, entry["file"], entry["sha256"]
        )
        payload = safetensors_to_checkpoint(
            path,
            {
                "sha256": entry["sha256"],
                "file": entry["file"],
                "commit": entry["commit"],
                "url": base_url(url) + entry["file"],
            },
        )
        _check_config(payload["config"], item, "weights file")
        restored.append((item, payload, entry))
    for item, payload, entry in restored:
        save_checkpoint(item.path, payload)
        print(
            f"loaded pretrained weights of {item.label} (sha256 {entry['sha256'][:12]}…, "
            f"trained by commit {entry['commit']}) into {item.relative}"
        )
    return [entry for _, _, entry in restored]


def fetch_missing(
    wanted: Sequence[CachedModel],
    *,
    force: bool | None = None,
    url: str | None = None,
) -> None:
    """Fetch the release's weights of those of ``wanted`` the cache lacks, or train them
    here.

    ``force`` (default ``$CVAE_FORCE_TRAINING``) downloads nothing and deletes a cached
    checkpoint of ``wanted`` that came from the release, so that it is trained here.
    Without network, or when the release has nothing for this configuration, one line
    says so and the caller trains; a file that fails its SHA-256 check is an error.
    """
    if force_training(force):
        for item in wanted:
            if item.path.is_file() and pretrained_origin(item.path) is not None:
                print(
                    f"forced training: the cached {item.label} came from the release; training it here"
                )
                item.path.unlink()
        return
    missing = [item for item in wanted if not item.path.exists()]
    if not missing:
        return
    try:
        restore_checkpoints(missing, url)
    except (PretrainedUnavailableError, PretrainedMismatchError) as error:
        print(f"pretrained weights not used: {error}; training here")


def _check_config(stored: dict, item: CachedModel, where: str) -> None:
    diff = config_diff(stored, item.config)
    if diff:
        shown = "; ".join(
            f"{k}: release has {a!r}, wanted {b!r}"
            for k, (a, b) in list(diff.items())[:3]
        )
        more = f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""
        raise PretrainedMismatchError(
            f"the release's {item.relative} ({where}) was made by another configuration: {shown}{more}"
        )


def pretrained_origin(path: str | Path) -> dict | None:
    """The provenance of a cached checkpoint that came from the release, else
    ``None``."""
    return load_checkpoint(path)["history"].get("pretrained")


# --- reference results ---


def fetch_reference_results(cache_dir: str | Path, url: str | None = None) -> Path:
    """The release's ``results/reference/`` folder, unpacked (once) into
    ``cache_dir/reference``: downloaded into :func:`download_cache`, checked against the
    manifest's SHA-256, unpacked next to the target and renamed into place when whole.
    """
    target = Path(cache_dir) / "reference"
    if target.is_dir():
        return target
    folder = download_cache(url)
    manifest = fetch_manifest(folder, url)
    entry = manifest.get("reference")
    if entry is None:
        raise PretrainedUnavailableError("the release has no reference results")
    archive = _download(
        base_url(url) + entry["file"], folder, entry["file"], entry["sha256"]
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    unpacked = Path(tempfile.mkdtemp(dir=target.parent, prefix=".reference-"))
    try:
        with zipfile.ZipFile(archive) as bundle:
            for name in bundle.namelist():
                if name.startswith("/") or ".." in Path(name).parts:
                    raise PretrainedIntegrityError(
                        f"{entry['file']} holds an unsafe path {name!r}"
                    )
            bundle.extractall(unpacked)
        os.replace(unpacked, target)
    except BaseException:
        shutil.rmtree(unpacked, ignore_errors=True)
        raise
    print(
        f"fetched the reference results (sha256 {entry['sha256'][:12]}…) into {target}"
    )
    return target


def write_reference_archive(reference_dir: str | Path, path: str | Path) -> int:
    """Zip every file of ``reference_dir`` into ``path`` with fixed timestamps, so the
    same folder always gives the same bytes (and SHA-256). Returns the number of
    files."""
    files = sorted(p for p in Path(reference_dir).rglob("*") if p.is_file())
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for file in files:
            info = zipfile.ZipInfo(
                file.relative_to(reference_dir).as_posix(), (1980, 1, 1, 0, 0, 0)
            )
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            bundle.writestr(info, file.read_bytes())
    return len(files)
