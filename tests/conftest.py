"""Shared fixtures. Tests run on the CPU; MNIST comes from $CVAE_DATA_DIR (CI: a copy of
shared/data)."""

from __future__ import annotations

import pytest
import torch

from cvae_helpers.config import RunSpec, get_profile
from cvae_helpers.data import MaskedSplit, QuadrantSplits, mask_quadrants


@pytest.fixture(autouse=True)
def _cpu_only(monkeypatch):
    monkeypatch.setenv("CVAE_DEVICE", "cpu")


@pytest.fixture(autouse=True)
def _default_precision(monkeypatch):
    """The tests choose the precision themselves: a developer's CVAE_PRECISION=bf16
    would otherwise change what tiny_spec trains with."""
    monkeypatch.delenv("CVAE_PRECISION", raising=False)


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch):
    """Pretrained weights come from 127.0.0.1 only: a test that wants them serves them
    itself (tests/test_pretrained.py); elsewhere a download fails at once and training
    goes ahead."""
    monkeypatch.setenv("CVAE_PRETRAINED_URL", "http://127.0.0.1:9/")


@pytest.fixture(autouse=True)
def _own_download_cache(monkeypatch, tmp_path):
    """Each test downloads into a cache of its own, never the developer's pooch cache,
    so a file kept by another test cannot stand in for the one a test serves."""
    monkeypatch.setenv("CVAE_DOWNLOAD_CACHE", str(tmp_path / "download-cache"))


def synthetic_split(n: int, q: int, seed: int) -> MaskedSplit:
    """Blobby fake digits in [0, 1]: fast stand-ins where real MNIST is not the
    point."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 28, 28, generator=g) ** 4
    inputs, targets = mask_quadrants(images, q)
    return MaskedSplit(inputs, targets, torch.randint(0, 10, (n,), generator=g))


def metrics_record(q: int, decoder: bool = False) -> dict:
    """One setting's metrics as the pipeline writes them (``metrics_q*.json``), with
    round made-up numbers: for the tests of tables and reports."""
    return {
        "num_quadrant_inputs": q,
        "profile": "full",
        "seed": 0,
        "decoder_sees_input": decoder,
        "baseline_nll": 100.0 / q,
        "cvae_nll_mc": 80.0 / q,
        "cvae_nll_is": 70.0 / q,
        "cvae_neg_elbo": 75.0 / q,
        "baseline_nll_stderr": 0.5,
        "cvae_nll_mc_stderr": 0.5,
        "cvae_nll_is_stderr": 0.4,
        "cvae_neg_elbo_stderr": 0.4,
        "num_samples": 100,
        "num_test_images": 10000,
        "epochs_baseline": 20 + q,
        "epochs_cvae": 40 + q,
        "train_seconds": 300.0 * q,
        "eval_seconds": 30.0,
        "epoch_seconds_baseline": 60.0 * q,
        "epoch_seconds_cvae": 240.0 * q,
        "versions": {"torch": "2.14.1", "pyro": "1.9.2"},
    }


@pytest.fixture
def tiny_splits() -> QuadrantSplits:
    return QuadrantSplits(
        2,
        synthetic_split(96, 2, 0),
        synthetic_split(48, 2, 1),
        synthetic_split(32, 2, 2),
    )


@pytest.fixture
def tiny_profile():
    return get_profile("quick", max_epochs=3, batch_size=32, num_samples=8)


@pytest.fixture
def tiny_spec(tiny_profile, tmp_path) -> RunSpec:
    """A 2-quadrant run on the CPU with the tiny profile, caching under the test's
    tmp_path."""
    return RunSpec.create(
        2, tiny_profile, checkpoint_dir=tmp_path / "checkpoints", device="cpu"
    )
