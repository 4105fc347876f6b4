"""Budgets, devices and the run spec: resolved once, with errors a reader can act on."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest
import torch

from cvae_helpers.config import (
    PROFILES,
    RunSpec,
    cpu_kernels,
    describe_device,
    get_profile,
    resolve_device,
)


def test_device_choice_and_its_errors(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("CVAE_DEVICE", "cpu")
    assert resolve_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(
        ValueError,
        match=r"'cuda' was asked for, but CUDA is not available.*CVAE_DEVICE",
    ):
        resolve_device("cuda")
    monkeypatch.setenv("CVAE_DEVICE", "cuda:1")
    with pytest.raises(ValueError, match="'cuda:1' was asked for"):
        resolve_device()
    with pytest.raises(
        ValueError, match=r"Unknown device 'tpu'; use 'cpu', 'cuda', 'cuda:N' or 'auto'"
    ):
        resolve_device("tpu")


def test_cuda_is_chosen_when_available(monkeypatch):
    monkeypatch.delenv("CVAE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device() == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda:0")


def test_profiles_and_overrides(monkeypatch):
    monkeypatch.setenv("CVAE_PROFILE", "quick")
    assert get_profile() is PROFILES["quick"]
    assert (
        get_profile("full", patience=7).training.patience == 7
        and PROFILES["full"].training.patience == 3
    )
    with pytest.raises(ValueError, match=r"Unknown profile 'huge'.*CVAE_PROFILE"):
        get_profile("huge")


def test_run_spec_resolves_everything_once(monkeypatch, tmp_path):
    monkeypatch.setenv("CVAE_PROFILE", "quick")
    monkeypatch.setenv("CVAE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CVAE_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    spec = RunSpec.create(2, seed=3)
    assert (
        spec.profile is PROFILES["quick"]
        and spec.seed == 3
        and not spec.decoder_sees_input
    )
    assert (
        spec.data_dir == tmp_path / "data" and spec.checkpoint_dir == tmp_path / "ckpt"
    )
    assert spec.device == torch.device("cpu")  # the tests' CVAE_DEVICE
    # arguments win over the environment; a spec is frozen and derived specs share the
    # rest
    other = RunSpec.create(1, "full", data_dir="~/mnist", device="cpu")
    assert (
        other.profile is PROFILES["full"]
        and other.data_dir == Path("~/mnist").expanduser()
    )
    with pytest.raises(FrozenInstanceError):
        spec.seed = 4
    three = spec.for_quadrants(3).with_decoder(True)
    assert (three.num_quadrant_inputs, three.decoder_sees_input, three.seed) == (
        3,
        True,
        3,
    )
    assert spec.num_quadrant_inputs == 2


@pytest.mark.parametrize("q", [0, 4, True, "2"])
def test_run_spec_refuses_a_wrong_quadrant_count(q):
    with pytest.raises(ValueError, match="must be 1, 2 or 3"):
        RunSpec.create(q, "quick", device="cpu")


def test_precision_switch_and_its_fallback(monkeypatch):
    from cvae_helpers import config, training

    cpu = torch.device("cpu")
    monkeypatch.delenv("CVAE_PRECISION", raising=False)
    assert config.resolve_precision(None, cpu) == "fp32"
    monkeypatch.setenv("CVAE_PRECISION", "bf16")
    for module in (config, training):
        monkeypatch.setattr(module, "bf16_supported", lambda device: True)
    assert config.resolve_precision(None, cpu) == "bf16"
    assert training.autocast_dtype("bf16", cpu) == torch.bfloat16
    assert training.autocast_dtype("fp32", cpu) is None
    with pytest.raises(ValueError, match=r"Unknown precision 'fp16'.*CVAE_PRECISION"):
        config.resolve_precision("fp16", cpu)
    # no fast bf16 on this CPU: say so and train in fp32
    for module in (config, training):
        monkeypatch.setattr(module, "bf16_supported", lambda device: False)
    with pytest.warns(UserWarning, match="no AVX512-BF16 or AMX"):
        assert config.resolve_precision("bf16", cpu) == "fp32"
    # a GPU without bf16 keeps the switch but autocasts to fp16 (with a gradient scaler)
    assert training.autocast_dtype("bf16", torch.device("cuda")) == torch.float16
    with pytest.warns(UserWarning, match="training in fp32 instead"):
        spec = RunSpec.create(1, "quick", device="cpu", precision="bf16")
    assert spec.precision == "fp32"
    with pytest.raises(ValueError, match="Unknown precision"):
        RunSpec(1, PROFILES["quick"], precision="fp8")


def test_profile_fields_and_the_training_part_of_the_cache_key():
    full, quick = PROFILES["full"], PROFILES["quick"]
    assert (full.reference, full.fetch_pretrained) == (True, True)
    assert (quick.reference, quick.fetch_pretrained) == (
        False,
        False,
    )  # the quick budget never downloads
    assert (
        full.description == "the real experiment"
        and "not meaningful" in quick.description
    )
    assert (full.evaluation.diversity_images, quick.evaluation.diversity_images) == (
        1000,
        50,
    )
    assert (
        full.evaluation.curve_sample_sizes[-1] == 5000
        and quick.evaluation.curve_sample_sizes[-1] == 300
    )
    assert (full.evaluation.curve_images, quick.evaluation.curve_images) == (500, 100)
    assert full.evaluation.bench_batches > quick.evaluation.bench_batches > 0
    assert list(full.evaluation.curve_sample_sizes) == sorted(
        full.evaluation.curve_sample_sizes
    )
    # only what changes a trained model is in its cache key
    assert quick.training_dict() == {
        "name": "quick", "train_size": 3000, "val_size": 1000, "max_epochs": 2, "patience": 3,
        "batch_size": 128, "learning_rate": 1e-3}  # fmt: skip
    assert (
        get_profile("quick", num_samples=99, curve_images=7).training_dict()
        == quick.training_dict()
    )
    assert get_profile("quick", batch_size=64).training_dict()["batch_size"] == 64
    # a record's settings hold every field, by concern
    settings = full.as_dict()
    assert set(settings["training"]) > set(full.training_dict()) - {"name"}
    assert settings["evaluation"]["num_samples"] == 100
    assert settings["study"]["seeds"] == 5


def test_bf16_is_a_lever_of_the_one_training_step(monkeypatch):
    """bf16 is torch.autocast around the step: any run may ask for it where the
    hardware has it, and there is no engine to choose."""
    from cvae_helpers import config

    monkeypatch.setattr(config, "bf16_supported", lambda device: True)
    spec = RunSpec.create(1, "quick", device="cpu", precision="bf16")
    assert spec.precision == "bf16" and not hasattr(spec, "engine")
    assert RunSpec(1, PROFILES["quick"], precision="bf16").precision == "bf16"
    monkeypatch.setenv("CVAE_ENGINE", "fast")  # a leftover setting changes nothing
    assert RunSpec.create(1, "quick", device="cpu") == replace(spec, precision="fp32")


def test_run_spec_family_is_an_object_made_from_its_name():
    from cvae_helpers.families import CVAE, GSNN, HYBRID

    spec = RunSpec.create(1, "quick", device="cpu")
    assert spec.family is CVAE and spec.family.alpha == 1.0
    gsnn = RunSpec(1, PROFILES["quick"], family="gsnn")
    assert gsnn.family is GSNN and spec.with_family("gsnn").family is GSNN
    assert spec.with_family("hybrid").family is HYBRID and HYBRID.alpha == 0.5
    hybrid = spec.with_family(HYBRID, alpha=0.2)
    assert hybrid.family.name == "hybrid" and hybrid.family.alpha == 0.2
    # the CVAE and the GSNN have no weight to set
    assert spec.with_family("cvae", alpha=0.2).family is CVAE
    with pytest.raises(ValueError, match="Unknown model family 'vae'"):
        RunSpec.create(1, "quick", device="cpu", family="vae")
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\], got -0.1"):
        spec.with_family("hybrid", alpha=-0.1)


def test_cpu_provenance_names_the_model_the_kernels_and_the_threads(monkeypatch):
    # Same-seed runs on two hosts agree only on the same kernels and thread count,
    # so a CPU result's provenance must tell them apart.
    monkeypatch.setattr("cvae_helpers.config.cpu_model", lambda: "Some CPU")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert (
        describe_device(torch.device("cpu")) == "cpu (Some CPU, AVX2 kernels, 1 thread)"
    )
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert describe_device(torch.device("cpu")).endswith("AVX2 kernels, 2 threads)")
    monkeypatch.undo()
    assert cpu_kernels() == torch.backends.cpu.get_cpu_capability()
