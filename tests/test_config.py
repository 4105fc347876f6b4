"""Budgets, devices and the run spec: resolved once, with errors a reader can act on."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
import torch

from cvae_helpers.config import PROFILES, RunSpec, get_profile, resolve_device


def test_device_choice_and_its_errors(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("CVAE_DEVICE", "cpu")
    assert resolve_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"'cuda' was asked for, but CUDA is not available.*CVAE_DEVICE"):
        resolve_device("cuda")
    monkeypatch.setenv("CVAE_DEVICE", "cuda:1")
    with pytest.raises(ValueError, match="'cuda:1' was asked for"):
        resolve_device()
    with pytest.raises(ValueError, match=r"Unknown device 'tpu'; use 'cpu', 'cuda', 'cuda:N' or 'auto'"):
        resolve_device("tpu")


def test_cuda_is_chosen_when_available(monkeypatch):
    monkeypatch.delenv("CVAE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device() == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda:0")


def test_profiles_and_overrides(monkeypatch):
    monkeypatch.setenv("CVAE_PROFILE", "quick")
    assert get_profile() is PROFILES["quick"]
    assert get_profile("full", patience=7).patience == 7 and PROFILES["full"].patience == 3
    with pytest.raises(ValueError, match=r"Unknown profile 'huge'.*CVAE_PROFILE"):
        get_profile("huge")


def test_run_spec_resolves_everything_once(monkeypatch, tmp_path):
    monkeypatch.setenv("CVAE_PROFILE", "quick")
    monkeypatch.setenv("CVAE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CVAE_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    spec = RunSpec.create(2, seed=3)
    assert spec.profile is PROFILES["quick"] and spec.seed == 3 and not spec.decoder_sees_input
    assert spec.data_dir == tmp_path / "data" and spec.checkpoint_dir == tmp_path / "ckpt"
    assert spec.device == torch.device("cpu")  # the tests' CVAE_DEVICE
    # arguments win over the environment; a spec is frozen and derived specs share the rest
    other = RunSpec.create(1, "full", data_dir="~/mnist", device="cpu")
    assert other.profile is PROFILES["full"] and other.data_dir == Path("~/mnist").expanduser()
    with pytest.raises(FrozenInstanceError):
        spec.seed = 4
    three = spec.for_quadrants(3).with_decoder(True)
    assert (three.num_quadrant_inputs, three.decoder_sees_input, three.seed) == (3, True, 3)
    assert spec.num_quadrant_inputs == 2


@pytest.mark.parametrize("q", [0, 4, True, "2"])
def test_run_spec_refuses_a_wrong_quadrant_count(q):
    with pytest.raises(ValueError, match="must be 1, 2 or 3"):
        RunSpec.create(q, "quick", device="cpu")


def test_precision_switch_and_its_fallback(monkeypatch):
    from cvae_helpers import config

    cpu = torch.device("cpu")
    monkeypatch.delenv("CVAE_PRECISION", raising=False)
    assert config.resolve_precision(None, cpu) == "fp32"
    monkeypatch.setenv("CVAE_PRECISION", "bf16")
    monkeypatch.setattr(config, "bf16_supported", lambda device: True)
    assert config.resolve_precision(None, cpu) == "bf16"
    assert config.autocast_dtype("bf16", cpu) == torch.bfloat16
    assert config.autocast_dtype("fp32", cpu) is None
    with pytest.raises(ValueError, match=r"Unknown precision 'fp16'.*CVAE_PRECISION"):
        config.resolve_precision("fp16", cpu)
    # no fast bf16 on this CPU: say so and train in fp32
    monkeypatch.setattr(config, "bf16_supported", lambda device: False)
    with pytest.warns(UserWarning, match="no AVX512-BF16 or AMX"):
        assert config.resolve_precision("bf16", cpu) == "fp32"
    # a GPU without bf16 keeps the switch but autocasts to fp16 (with a gradient scaler)
    assert config.autocast_dtype("bf16", torch.device("cuda")) == torch.float16
    with pytest.warns(UserWarning, match="training in fp32 instead"):
        spec = RunSpec.create(1, "quick", device="cpu", precision="bf16")
    assert spec.precision == "fp32"
    with pytest.raises(ValueError, match="Unknown precision"):
        RunSpec(1, PROFILES["quick"], precision="fp8")
