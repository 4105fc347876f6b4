"""Paths, budgets (profiles), devices, seeds and versions: the knobs every module shares.

Environment variables (each also has a function argument that wins over it):

- ``CVAE_DATA_DIR``: the data root, holding ``MNIST/raw/*.gz`` as torchvision lays it out.
- ``CVAE_CHECKPOINT_DIR``: where trained models are cached.
- ``CVAE_PROFILE``: ``full`` (default) or ``quick``, the budget of every chapter and command.
- ``CVAE_DEVICE``: ``cpu``, ``cuda`` or ``auto`` (default: CUDA when available).
"""

from __future__ import annotations

import os
import platform
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

DATA_DIR_ENV = "CVAE_DATA_DIR"
CHECKPOINT_DIR_ENV = "CVAE_CHECKPOINT_DIR"
PROFILE_ENV = "CVAE_PROFILE"
DEVICE_ENV = "CVAE_DEVICE"


def project_root() -> Path:
    """The repository root when the package runs from a checkout, else the working directory."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def default_data_dir() -> Path:
    """Data root: ``$CVAE_DATA_DIR`` if set, else ``<project>/data`` (ignored by git)."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else project_root() / "data"


def default_checkpoint_dir() -> Path:
    """Checkpoint cache: ``$CVAE_CHECKPOINT_DIR`` if set, else ``<project>/checkpoints``."""
    env = os.environ.get(CHECKPOINT_DIR_ENV)
    return Path(env).expanduser() if env else project_root() / "checkpoints"


@dataclass(frozen=True)
class Profile:
    """A training and evaluation budget.

    ``None`` sizes mean the whole split (50k train, 10k validation, 10k test).
    """

    name: str
    train_size: int | None
    val_size: int | None
    test_size: int | None
    max_epochs: int
    patience: int
    batch_size: int
    learning_rate: float
    num_samples: int

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    # The paper's and Pyro tutorial's setup: Adam 1e-3, early stopping with patience 3, <= 50 epochs.
    "full": Profile(
        name="full", train_size=None, val_size=None, test_size=None, max_epochs=50, patience=3,
        batch_size=128, learning_rate=1e-3, num_samples=100,
    ),
    # A smoke-test budget for CI: small subsets, two epochs, few samples.
    "quick": Profile(
        name="quick", train_size=3000, val_size=1000, test_size=1000, max_epochs=2, patience=3,
        batch_size=128, learning_rate=1e-3, num_samples=10,
    ),
}


def get_profile(name: str | None = None, **overrides) -> Profile:
    """The profile called ``name`` (default ``$CVAE_PROFILE``, else ``full``), with overrides."""
    name = name or os.environ.get(PROFILE_ENV, "full")
    if name not in PROFILES:
        raise ValueError(
            f"Unknown profile {name!r}; choose one of {sorted(PROFILES)} "
            f"(argument or the {PROFILE_ENV} environment variable)."
        )
    return replace(PROFILES[name], **overrides) if overrides else PROFILES[name]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else ``$CVAE_DEVICE``, else CUDA when available, else the CPU."""
    choice = str(device) if device is not None else os.environ.get(DEVICE_ENV, "auto")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"Device {choice!r} was asked for, but CUDA is not available here; "
            f"use 'cpu' or 'auto' (argument or the {DEVICE_ENV} environment variable)."
        )
    if not (choice == "cpu" or choice.startswith("cuda")):
        raise ValueError(f"Unknown device {choice!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'.")
    return torch.device(choice)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy, torch and Pyro at once (Pyro samples from torch's generator)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def library_versions() -> dict[str, str]:
    """Versions that produced a result, stored beside every checkpoint and metrics file."""
    import pyro
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "pyro": pyro.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }
