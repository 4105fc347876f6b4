from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from cvae_helpers import checkpoints
from cvae_helpers.checkpoints import CheckpointMismatchError, load_checkpoint, save_checkpoint
from cvae_helpers.config import get_profile
from cvae_helpers.evaluation import baseline_nll
from cvae_helpers.models import masked_bce
from cvae_helpers.training import (
    NonFiniteLossError,
    baseline_config,
    fit,
    train_baseline,
    train_cvae,
)


def _val_nll(net, split):
    return baseline_nll(net, split.inputs, split.targets).mean().item()


def test_baseline_keeps_the_weights_of_its_best_validation_epoch(tiny_splits, tiny_spec):
    spec = replace(tiny_spec, profile=get_profile("quick", max_epochs=6, patience=10, batch_size=32,
                                                  learning_rate=0.05))
    net, history = train_baseline(tiny_splits, spec, progress=False)
    val_loss = history["val_loss"]
    assert len(history["train_loss"]) == len(val_loss) == 6
    # the kept epoch is the argmin of the validation curve, and the restored weights give that loss
    best = min(range(6), key=val_loss.__getitem__) + 1
    assert history["best_epoch"] == best and history["best_val_loss"] == val_loss[best - 1]
    assert _val_nll(net, tiny_splits.val) == pytest.approx(val_loss[best - 1], rel=1e-6)
    # the large learning rate makes the curve non-monotone, so "the last epoch" would be wrong
    assert best != 6 and _val_nll(net, tiny_splits.val) < val_loss[-1]
    assert not net.training


def test_same_seed_same_numbers(tiny_splits, tiny_spec):
    a, ha = train_baseline(tiny_splits, replace(tiny_spec, seed=5), progress=False)
    b, hb = train_baseline(tiny_splits, replace(tiny_spec, seed=5), progress=False)
    assert ha["val_loss"] == hb["val_loss"]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    _, hc = train_baseline(tiny_splits, replace(tiny_spec, seed=6), progress=False)
    assert hc["val_loss"] != ha["val_loss"]


def test_early_stopping_keeps_the_best_epoch(tiny_splits):
    profile = get_profile("quick", max_epochs=20, patience=3, batch_size=32)
    module = torch.nn.Linear(784, 784)
    val_losses = iter([5.0, 4.0, 4.5, 4.2, 4.1, 3.0])
    weights_at = {}

    def record(epoch, history):
        weights_at[epoch] = module.weight.detach().clone()

    result = fit(module=module, trainable=module,
                 loss_fn=lambda x, y: masked_bce(module(x.reshape(-1, 784)), y).sum(),
                 train_tensors=(tiny_splits.train.inputs, tiny_splits.train.targets),
                 val_loss_fn=lambda: next(val_losses), config={"test": 1}, profile=profile,
                 seed=0, label="test", progress=False, on_epoch_end=record)
    history = result.history
    assert len(history["val_loss"]) == 5 and history["stopped_early"]
    assert history["best_epoch"] == 2 and history["best_val_loss"] == 4.0
    assert torch.equal(module.weight, weights_at[2])


def test_checkpoint_round_trip_and_reuse(tiny_splits, tiny_spec, tmp_path, capsys):
    path = tmp_path / "baseline.pt"
    net, history = train_baseline(tiny_splits, tiny_spec, checkpoint_path=path, progress=False)
    assert "reusing" not in capsys.readouterr().out
    state = load_checkpoint(path, baseline_config(tiny_spec))
    assert state["status"] == "finished" and state["epoch"] == 3
    assert {"torch", "pyro", "torchvision"} <= set(state["versions"])
    assert state["optimizer_state"]["state"]  # Adam moments are kept
    assert all(torch.equal(v, state["model_state"][k]) for k, v in net.state_dict().items())
    calls = []

    def no_training(*args, **kwargs):
        calls.append(1)
        raise AssertionError("a finished checkpoint must be reused, not retrained")

    reused, reused_history = train_baseline(tiny_splits, tiny_spec, checkpoint_path=path,
                                            progress=False, after_save=no_training)
    assert reused_history == history and not calls
    # one line says so, naming the model, its epochs and the file
    assert capsys.readouterr().out.splitlines() == [
        f"reusing baseline, 2 quadrants: finished after 3 epochs (…/{path.parent.parent.name}/"
        f"{path.parent.name}/baseline.pt)"]
    pairs = zip(net.state_dict().values(), reused.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tiny_splits, tiny_spec, tmp_path,
                                                              capsys):
    spec = replace(tiny_spec, profile=get_profile("quick", max_epochs=4, patience=10, batch_size=32))
    straight, straight_history = train_baseline(tiny_splits, spec, progress=False)

    class Interrupt(Exception):
        pass

    def stop_after_two(epoch):
        if epoch == 2:
            raise Interrupt

    path = tmp_path / "baseline.pt"
    with pytest.raises(Interrupt):
        train_baseline(tiny_splits, spec, checkpoint_path=path, progress=False,
                       after_save=stop_after_two)
    assert load_checkpoint(path)["status"] == "running" and load_checkpoint(path)["epoch"] == 2
    capsys.readouterr()
    resumed, resumed_history = train_baseline(tiny_splits, spec, checkpoint_path=path,
                                              progress=False)
    assert capsys.readouterr().out.startswith(
        "resuming baseline, 2 quadrants, after epoch 2 of at most 4 (")
    assert resumed_history["val_loss"] == straight_history["val_loss"]
    pairs = zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_checkpoint_from_another_configuration_is_refused(tiny_splits, tiny_spec, tmp_path):
    path = tmp_path / "baseline.pt"
    train_baseline(tiny_splits, tiny_spec, checkpoint_path=path, progress=False)
    with pytest.raises(CheckpointMismatchError, match=r"seed: checkpoint has 0, you asked for 1"):
        train_baseline(tiny_splits, replace(tiny_spec, seed=1), checkpoint_path=path, progress=False)
    with pytest.raises(CheckpointMismatchError, match=r"profile\.max_epochs: checkpoint has 3"):
        train_baseline(tiny_splits, replace(tiny_spec, profile=replace(tiny_spec.profile, max_epochs=4)),
                       checkpoint_path=path, progress=False)


def test_interrupted_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"config": {"a": 1}, "value": torch.ones(2)})

    def broken_save(obj, f):
        with open(f, "wb") as handle:
            handle.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"config": {"a": 2}, "value": torch.zeros(2)})
    assert load_checkpoint(path, {"a": 1})["value"].tolist() == [1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_garbage_file_gets_a_clear_error(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_nan_loss_names_setting_epoch_and_batch(tiny_splits, tiny_spec):
    bad = tiny_splits.train.inputs.clone()
    bad[40] = float("nan")  # the second batch of 32 in shuffled order contains it, or another
    tiny_splits.train.inputs = bad
    with pytest.raises(NonFiniteLossError, match=r"baseline, 2 quadrants: .* at epoch 1, batch \d+ of 3"):
        train_baseline(tiny_splits, tiny_spec, progress=False)


@pytest.mark.parametrize("sees_input", [False, True])
def test_cvae_trains_with_both_decoders(tiny_splits, tiny_spec, sees_input, tmp_path):
    spec = tiny_spec.with_decoder(sees_input)
    baseline, _ = train_baseline(tiny_splits, spec, progress=False)
    before = {k: v.clone() for k, v in baseline.state_dict().items()}
    snapshot_inputs = tiny_splits.test.inputs[:4]
    cvae, history = train_cvae(tiny_splits, baseline, spec, baseline_cfg={"b": 1}, z_dim=8,
                               hidden_1=32, hidden_2=32, checkpoint_path=tmp_path / "cvae.pt",
                               progress=False, snapshot_inputs=snapshot_inputs, snapshot_samples=2)
    assert len(history["val_loss"]) == 3 and all(v > 0 for v in history["val_loss"])
    assert len(history["snapshots"]) == 3 and history["snapshots"][0].shape == (2, 4, 784)
    assert history["snapshots"][0].dtype == torch.uint8
    # the frozen baseline is untouched, and the checkpoint carries the config of both
    assert all(torch.equal(before[k], v) for k, v in cvae.baseline.state_dict().items())
    stored = load_checkpoint(tmp_path / "cvae.pt")["config"]
    assert stored["decoder_sees_input"] is sees_input and stored["baseline"] == {"b": 1}
    with pytest.raises(CheckpointMismatchError, match="z_dim"):
        train_cvae(tiny_splits, baseline, spec, baseline_cfg={"b": 1}, z_dim=9, hidden_1=32,
                   hidden_2=32, checkpoint_path=tmp_path / "cvae.pt", progress=False)


def test_config_diff_names_nested_keys_with_dots():
    stored = {"model": "cvae", "profile": {"max_epochs": 50, "patience": 3},
              "baseline": {"profile": {"batch_size": 128}, "seed": 0}}
    wanted = {"model": "cvae", "profile": {"max_epochs": 2, "patience": 3},
              "baseline": {"profile": {"batch_size": 64}, "seed": 0}, "extra": 1}
    assert checkpoints.config_diff(stored, wanted) == {
        "baseline.profile.batch_size": (128, 64), "extra": (None, 1), "profile.max_epochs": (50, 2)}
    assert checkpoints.config_diff(stored, stored) == {}
    # a dict against a scalar is one difference at that key, not a crash
    assert checkpoints.config_diff({"a": {"b": 1}}, {"a": 2}) == {"a": ({"b": 1}, 2)}


def test_bf16_training_keeps_fp32_weights_and_its_own_cache_file(tiny_splits, tiny_spec, monkeypatch):
    from cvae_helpers import config
    from cvae_helpers.pipeline import checkpoint_paths

    monkeypatch.setattr(config, "bf16_supported", lambda device: True)  # autocast works anywhere
    spec = replace(tiny_spec, precision="bf16")
    baseline, _ = train_baseline(tiny_splits, spec, progress=False)
    cvae, history = train_cvae(tiny_splits, baseline, spec, baseline_cfg=baseline_config(spec),
                               z_dim=8, hidden_1=32, hidden_2=32, progress=False)
    assert all(p.dtype == torch.float32 for p in cvae.parameters())
    assert all(math.isfinite(v) for v in history["val_loss"] + history["train_loss"])
    fp32_paths, bf16_paths = checkpoint_paths(tiny_spec), checkpoint_paths(spec)
    assert bf16_paths[1].name == "cvae_pyz_bf16.pt" and fp32_paths[1].name == "cvae_pyz.pt"
    assert baseline_config(spec)["precision"] == "bf16"
    # the same seed in fp32 trains to other numbers: the switch really changes the arithmetic
    _, fp32_history = train_cvae(tiny_splits, baseline, tiny_spec, baseline_cfg={}, z_dim=8,
                                 hidden_1=32, hidden_2=32, progress=False)
    assert fp32_history["train_loss"] != history["train_loss"]
