"""Checkpoints tied to the configuration that made them: atomic writes, safe loads,
clear errors."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import library_versions

FORMAT_VERSION = 1


class CheckpointMismatchError(ValueError):
    """A checkpoint was made by another configuration than the one asked for."""


def config_diff(stored: dict, wanted: dict) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ, as ``{key: (stored, wanted)}``, nested keys joined by
    dots."""
    diff: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diff.update({f"{key}.{k}": v for k, v in config_diff(a, b).items()})
        elif a != b:
            diff[key] = (a, b)
    return diff


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` (plus versions) to ``path`` atomically: a temporary file, then
    a rename, so an interrupted run never leaves a truncated file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        **payload,
        "format_version": FORMAT_VERSION,
        "versions": library_versions(),
    }
    handle, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    os.close(handle)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(
    path: str | Path, config: dict | None = None, map_location: Any = "cpu"
) -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)``; a stored configuration
    other than ``config`` is a :class:`CheckpointMismatchError` that lists the diff."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # a foreign or damaged file
        raise ValueError(
            f"{path} is not a readable checkpoint of this project ({type(error).__name__}: "
            f"{error}). Delete it to train again."
        ) from error
    if not isinstance(payload, dict) or "config" not in payload:
        raise ValueError(
            f"{path} is not a checkpoint of this project (no stored configuration)."
        )
    if config is not None:
        diff = config_diff(payload["config"], config)
        if diff:
            lines = "\n".join(
                f"  {k}: checkpoint has {a!r}, you asked for {b!r}"
                for k, (a, b) in diff.items()
            )
            raise CheckpointMismatchError(
                f"The checkpoint {path} was made by another configuration:\n{lines}\n"
                "Delete it (or pass another checkpoint directory) to train this configuration, "
                "or ask for the configuration it was made with."
            )
    return payload
