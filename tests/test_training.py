from __future__ import annotations

import math
from dataclasses import replace

import pyro
import pytest
import torch

from cvae_helpers import checkpoints
from cvae_helpers.checkpoints import (
    CheckpointMismatchError,
    load_checkpoint,
    save_checkpoint,
)
from cvae_helpers.config import RunSpec, get_profile, with_levers
from cvae_helpers.data import EVAL_BATCH_SIZE, TensorBatches
from cvae_helpers.evaluation import baseline_nll
from cvae_helpers.families import HybridELBO
from cvae_helpers.models import CVAE, BaselineNet, masked_bce
from cvae_helpers.speed import textbook_baseline_step
from cvae_helpers.training import (
    NonFiniteLossError,
    TrainingRun,
    baseline_config,
    baseline_steps,
    cvae_config,
    fit,
    make_steps,
    make_svi,
    train_baseline,
    train_cvae,
)


def _val_nll(net, split):
    return baseline_nll(net, split.inputs, split.targets).mean().item()


def test_baseline_keeps_the_weights_of_its_best_validation_epoch(
    tiny_splits, tiny_spec
):
    spec = replace(
        tiny_spec,
        profile=get_profile(
            "quick", max_epochs=6, patience=10, batch_size=32, learning_rate=0.05
        ),
    )
    net, history = train_baseline(tiny_splits, spec, progress=False)
    val_loss = history["val_loss"]
    assert len(history["train_loss"]) == len(val_loss) == 6
    # the kept epoch is the argmin of the validation curve, and the restored weights
    # give that loss
    best = min(range(6), key=val_loss.__getitem__) + 1
    assert (
        history["best_epoch"] == best and history["best_val_loss"] == val_loss[best - 1]
    )
    assert _val_nll(net, tiny_splits.val) == pytest.approx(val_loss[best - 1], rel=1e-6)
    # the large learning rate makes the curve non-monotone, so "the last epoch" would be
    # wrong
    assert best != 6 and _val_nll(net, tiny_splits.val) < val_loss[-1]
    assert not net.training


def test_same_seed_same_numbers(tiny_splits, tiny_spec):
    a, ha = train_baseline(tiny_splits, replace(tiny_spec, seed=5), progress=False)
    b, hb = train_baseline(tiny_splits, replace(tiny_spec, seed=5), progress=False)
    assert ha["val_loss"] == hb["val_loss"]
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    _, hc = train_baseline(tiny_splits, replace(tiny_spec, seed=6), progress=False)
    assert hc["val_loss"] != ha["val_loss"]


class _ScriptedSteps:
    """Shaped like TrainingSteps: a real gradient step on ``module``, and validation
    losses from a script (per item; ``evaluate_loss`` returns the batch's sum)."""

    name, lr = "scripted", 0.1

    def __init__(self, module, val_per_item):
        self.module = module
        self.optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
        self.val_per_item = iter(val_per_item)
        self.current = None

    def decay(self, val_loss):
        pass

    def step(self, xs, ys):
        loss = masked_bce(self.module(xs.reshape(-1, 784)), ys).sum()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.current = None
        return loss.item()

    def evaluate_loss(self, xs, ys):
        if self.current is None:
            self.current = next(self.val_per_item)
        return self.current * len(xs)

    def get_state(self):
        return self.optimizer.state_dict()

    def set_state(self, state):
        self.optimizer.load_state_dict(state)


def test_early_stopping_keeps_the_best_epoch(tiny_splits):
    profile = get_profile("quick", max_epochs=20, patience=3, batch_size=32)
    module = torch.nn.Linear(784, 784)
    weights_at = {}

    def record(epoch, history):
        weights_at[epoch] = module.weight.detach().clone()

    train = TensorBatches(
        tiny_splits.train.inputs, tiny_splits.train.targets, batch_size=32, seed=0
    )
    val = TensorBatches(
        tiny_splits.val.inputs,
        tiny_splits.val.targets,
        batch_size=EVAL_BATCH_SIZE,
        shuffle=False,
    )
    run = TrainingRun(
        module,
        {"test": 1},
        profile,
        "test",
        train,
        val,
        progress=False,
        on_epoch_end=record,
    )
    history = fit(
        _ScriptedSteps(module, [5.0, 4.0, 4.5, 4.2, 4.1, 3.0]), train, val, run
    )
    assert (
        history["val_loss"] == pytest.approx([5.0, 4.0, 4.5, 4.2, 4.1], rel=1e-6)
        and history["stopped_early"]
    )
    assert (
        history["best_epoch"] == 2
        and history["best_val_loss"] == history["val_loss"][1]
    )
    assert (
        len(history["train_loss"]) == 5 and history["trained_with"] == ["scripted"] * 5
    )
    assert not torch.equal(
        weights_at[2], weights_at[5]
    )  # training went on after the best epoch
    assert torch.equal(module.weight, weights_at[2])  # and its weights came back
    assert not module.training


def test_checkpoint_round_trip_and_reuse(tiny_splits, tiny_spec, tmp_path, capsys):
    path = tmp_path / "baseline.pt"
    net, history = train_baseline(
        tiny_splits, tiny_spec, checkpoint_path=path, progress=False
    )
    assert "reusing" not in capsys.readouterr().out
    state = load_checkpoint(path, baseline_config(tiny_spec))
    assert state["status"] == "finished" and state["epoch"] == 3
    assert {"torch", "pyro", "torchvision"} <= set(state["versions"])
    assert state["optimizer_state"]["optimizer"]["state"]  # Adam moments are kept
    assert all(
        torch.equal(v, state["model_state"][k]) for k, v in net.state_dict().items()
    )
    calls = []

    def no_training(*args, **kwargs):
        calls.append(1)
        raise AssertionError("a finished checkpoint must be reused, not retrained")

    reused, reused_history = train_baseline(
        tiny_splits,
        tiny_spec,
        checkpoint_path=path,
        progress=True,
        after_save=no_training,
    )
    assert reused_history == history and not calls
    # one line says so, naming the model, its epochs and the file
    assert capsys.readouterr().out.splitlines() == [
        f"reusing baseline, 2 quadrants: finished after 3 epochs (…/{path.parent.parent.name}/"
        f"{path.parent.name}/baseline.pt)"
    ]
    pairs = zip(net.state_dict().values(), reused.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    # a quiet run (a chapter's) reuses without a word
    quiet, _ = train_baseline(
        tiny_splits,
        tiny_spec,
        checkpoint_path=path,
        progress=False,
        after_save=no_training,
    )
    assert capsys.readouterr().out == "" and not calls
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            net.state_dict().values(), quiet.state_dict().values(), strict=True
        )
    )


class _Interrupt(Exception):
    pass


def _stop_after_two(epoch):
    if epoch == 2:
        raise _Interrupt


def test_resume_gives_the_same_result_as_an_uninterrupted_run(
    tiny_splits, tiny_spec, tmp_path, capsys
):
    spec = replace(
        tiny_spec,
        profile=get_profile("quick", max_epochs=4, patience=10, batch_size=32),
    )
    straight, straight_history = train_baseline(tiny_splits, spec, progress=False)
    path = tmp_path / "baseline.pt"
    with pytest.raises(_Interrupt):
        train_baseline(
            tiny_splits,
            spec,
            checkpoint_path=path,
            progress=False,
            after_save=_stop_after_two,
        )
    assert (
        load_checkpoint(path)["status"] == "running"
        and load_checkpoint(path)["epoch"] == 2
    )
    capsys.readouterr()
    resumed, resumed_history = train_baseline(
        tiny_splits, spec, checkpoint_path=path, progress=False
    )
    assert capsys.readouterr().out.startswith(
        "resuming baseline, 2 quadrants, after epoch 2 of at most 4 ("
    )
    assert resumed_history["val_loss"] == straight_history["val_loss"]
    assert resumed_history["train_loss"] == straight_history["train_loss"]
    assert resumed_history["trained_with"] == ["masked BCE, one Adam"] * 4
    pairs = zip(
        straight.state_dict().values(), resumed.state_dict().values(), strict=True
    )
    assert all(torch.equal(a, b) for a, b in pairs)


@pytest.mark.parametrize("levers", [(), ("lr-decay", "analytic-kl", "wide")])
def test_a_resumed_cvae_trains_as_an_uninterrupted_one(
    tiny_splits, tiny_spec, tmp_path, capsys, levers
):
    """The optimizer's state and the random state are checkpointed with the run:
    resuming after epoch 2 gives the uninterrupted run's numbers, bit for bit; with the
    protocol levers too, the learning-rate scheduler's state included."""
    base = get_profile("quick", max_epochs=4, patience=10, batch_size=32)
    spec = replace(tiny_spec, profile=with_levers(base, levers))
    baseline = BaselineNet()
    straight, straight_history = train_cvae(tiny_splits, baseline, spec, progress=False)
    path = tmp_path / "cvae.pt"
    with pytest.raises(_Interrupt):
        train_cvae(
            tiny_splits,
            baseline,
            spec,
            checkpoint_path=path,
            progress=False,
            after_save=_stop_after_two,
        )
    capsys.readouterr()
    resumed, resumed_history = train_cvae(
        tiny_splits, baseline, spec, checkpoint_path=path, progress=False
    )
    assert capsys.readouterr().out.startswith(
        "resuming CVAE, 2 quadrants, after epoch 2 of at most 4 ("
    )
    keys = ("train_loss", "val_loss", "trained_with", "best_epoch", "learning_rates")
    for key in keys:
        assert resumed_history[key] == straight_history[key], key
    rates = straight_history["learning_rates"]
    if levers:  # the rate was halved after an epoch without gain, and resumed so
        assert rates[0] == 1e-3 and min(rates) < 1e-3, rates
        assert straight.prior_net.fc1.out_features == 1000
    else:
        assert rates == [1e-3] * 4
    pairs = zip(
        straight.state_dict().values(), resumed.state_dict().values(), strict=True
    )
    assert all(torch.equal(a, b) for a, b in pairs)


def test_checkpoint_from_another_configuration_is_refused(
    tiny_splits, tiny_spec, tmp_path
):
    path = tmp_path / "baseline.pt"
    train_baseline(tiny_splits, tiny_spec, checkpoint_path=path, progress=False)
    with pytest.raises(
        CheckpointMismatchError, match=r"seed: checkpoint has 0, you asked for 1"
    ):
        train_baseline(
            tiny_splits,
            replace(tiny_spec, seed=1),
            checkpoint_path=path,
            progress=False,
        )
    with pytest.raises(
        CheckpointMismatchError, match=r"profile\.max_epochs: checkpoint has 3"
    ):
        train_baseline(
            tiny_splits,
            replace(tiny_spec, profile=tiny_spec.profile.replace(max_epochs=4)),
            checkpoint_path=path,
            progress=False,
        )


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


@pytest.mark.parametrize("model", ["baseline", "cvae"])
def test_nan_loss_names_setting_epoch_and_batch(tiny_splits, tiny_spec, model):
    """A NaN in one training image: the error names the model and setting, the epoch and
    the batch that holds the image. For the CVAE, Pyro's argument checks see it first
    (a Normal's NaN loc); for the baseline, the loss."""
    spec = tiny_spec
    bad = tiny_splits.train.inputs.clone()
    bad[40] = float("nan")
    tiny_splits.train.inputs = bad
    # the first epoch's shuffled order, as the training batches draw it from the seed
    order = torch.randperm(96, generator=torch.Generator().manual_seed(spec.seed))
    batch = int((order == 40).nonzero()) // 32 + 1
    if model == "baseline":
        label, what = "baseline", "the training loss is nan"
        with pytest.raises(NonFiniteLossError) as info:
            train_baseline(tiny_splits, spec, progress=False)
    else:
        label, what = "CVAE", "a distribution's parameters are NaN or infinite"
        with pytest.raises(NonFiniteLossError) as info:
            train_cvae(tiny_splits, BaselineNet(), spec, progress=False)
    message = str(info.value)
    assert message.startswith(
        f"{label}, 2 quadrants: {what} at epoch 1, training batch {batch} of 3. "
    )
    assert (
        "Lower the learning rate (now 0.001)" in message
        and "checkpoint is not kept" in message
    )
    if model == "cvae":
        assert "invalid values" in str(
            info.value.__cause__
        )  # Pyro's own error, kept as the cause


def test_a_nan_in_a_validation_image_names_the_validation_batch(tiny_splits, tiny_spec):
    bad = tiny_splits.val.inputs.clone()
    bad[5] = float("nan")
    tiny_splits.val.inputs = bad
    with pytest.raises(NonFiniteLossError) as info:
        train_cvae(tiny_splits, BaselineNet(), tiny_spec, progress=False)
    assert str(info.value).startswith("CVAE, 2 quadrants: ")
    assert "at epoch 1, validation batch 1 of 1. " in str(info.value)


@pytest.mark.parametrize("sees_input", [False, True])
def test_cvae_trains_with_both_decoders(tiny_splits, tiny_spec, sees_input, tmp_path):
    spec = tiny_spec.with_decoder(sees_input)
    baseline, _ = train_baseline(tiny_splits, spec, progress=False)
    before = {k: v.clone() for k, v in baseline.state_dict().items()}
    snapshot_inputs = tiny_splits.test.inputs[:4]
    cvae, history = train_cvae(
        tiny_splits,
        baseline,
        spec,
        checkpoint_path=tmp_path / "cvae.pt",
        progress=False,
        snapshot_inputs=snapshot_inputs,
    )
    assert len(history["val_loss"]) == 3 and all(v > 0 for v in history["val_loss"])
    assert history["trained_with"] == ["Trace_ELBO, one Adam"] * 3
    assert len(history["snapshots"]) == 3 and history["snapshots"][0].shape == (
        3,
        4,
        784,
    )
    assert history["snapshots"][0].dtype == torch.uint8
    assert not torch.equal(
        history["snapshots"][0], history["snapshots"][2]
    )  # training moved them
    assert cvae.generation_net.sees_input is sees_input and not cvae.training
    # the frozen baseline is untouched, and the checkpoint carries the config of both
    assert all(torch.equal(before[k], v) for k, v in cvae.baseline.state_dict().items())
    stored = load_checkpoint(tmp_path / "cvae.pt")["config"]
    assert stored == cvae_config(spec)
    assert stored["decoder_sees_input"] is sees_input and stored[
        "baseline"
    ] == baseline_config(spec)
    with pytest.raises(CheckpointMismatchError, match="decoder_sees_input"):
        train_cvae(
            tiny_splits,
            baseline,
            spec.with_decoder(not sees_input),
            checkpoint_path=tmp_path / "cvae.pt",
            progress=False,
        )


def test_the_cache_keys_and_paths_are_those_the_caches_hold(tmp_path):
    """A cached or released model is found by its path and its key: the full budget's
    tutorial run, and a lever run of a weighted hybrid in bf16, as the caches know
    them."""
    from cvae_helpers.pipeline import cached_models

    full = RunSpec.create(1, "full", device="cpu", checkpoint_dir=tmp_path)
    baseline, cvae = cached_models(full)
    training = {
        "name": "full",
        "train_size": None,
        "val_size": None,
        "max_epochs": 50,
        "patience": 3,
        "batch_size": 128,
        "learning_rate": 1e-3,
    }
    baseline_key = {
        "model": "baseline",
        "num_quadrant_inputs": 1,
        "hidden_1": 500,
        "hidden_2": 500,
        "seed": 0,
        "precision": "fp32",
        "profile": training,
    }
    assert (baseline.label, baseline.relative, baseline.config) == (
        "baseline, 1 quadrant",
        "full/q1_seed0/baseline.pt",
        baseline_key,
    )
    assert baseline.path == tmp_path / "full/q1_seed0/baseline.pt"
    assert (cvae.label, cvae.relative) == (
        "CVAE p(y|z), 1 quadrant",
        "full/q1_seed0/cvae_pyz.pt",
    )
    assert cvae.config == {
        "model": "cvae",
        "family": "cvae",
        "num_quadrant_inputs": 1,
        "seed": 0,
        "z_dim": 200,
        "hidden_1": 500,
        "hidden_2": 500,
        "decoder_sees_input": False,
        "precision": "fp32",
        "profile": training,
        "baseline": baseline_key,
    }
    lever = RunSpec(
        3,
        get_profile("quick-lr-decay"),
        seed=3,
        decoder_sees_input=True,
        checkpoint_dir=tmp_path,
        device=torch.device("cpu"),
        precision="bf16",
    ).with_family("hybrid", alpha=0.25)
    baseline, hybrid = cached_models(lever)
    assert baseline.relative == "quick/q3_seed3/baseline_bf16.pt"
    assert (hybrid.label, hybrid.relative) == (
        "hybrid p(y|x,z), 3 quadrants",
        "quick-lr-decay/q3_seed3/hybrid_a0.25_pyxz_bf16.pt",
    )
    quick = {
        "train_size": 3000,
        "val_size": 1000,
        "max_epochs": 2,
        "patience": 3,
        "batch_size": 128,
        "learning_rate": 1e-3,
    }
    assert baseline.config == {
        **baseline_key,
        "num_quadrant_inputs": 3,
        "seed": 3,
        "precision": "bf16",
        "profile": {"name": "quick", **quick},
    }
    assert hybrid.config == {
        **cvae.config,
        "family": "hybrid",
        "alpha": 0.25,
        "num_quadrant_inputs": 3,
        "seed": 3,
        "decoder_sees_input": True,
        "precision": "bf16",
        "profile": {"name": "quick-lr-decay", **quick, "lr_decay": 0.5},
        "baseline": baseline.config,
    }


def test_make_svi_pairs_the_model_with_the_familys_guide_and_loss(tiny_spec):
    from pyro.infer import Trace_ELBO
    from pyro.optim import PyroOptim

    cvae = CVAE(z_dim=4, hidden_1=8, hidden_2=8)
    svi = make_svi(cvae, tiny_spec)
    assert svi.model == cvae.model and svi.guide == cvae.guide
    assert isinstance(svi.loss.__self__, Trace_ELBO)  # SVI keeps an ELBO's loss method
    assert (
        isinstance(svi.optim, PyroOptim)
        and svi.optim.pt_optim_constructor is torch.optim.Adam
    )
    assert svi.optim.pt_optim_args == {"lr": tiny_spec.profile.training.learning_rate}
    gsnn = CVAE(z_dim=4, hidden_1=8, hidden_2=8, recognition=False)
    assert make_svi(gsnn, tiny_spec.with_family("gsnn")).guide == gsnn.gsnn_guide
    hybrid = make_svi(cvae, tiny_spec.with_family("hybrid", alpha=0.3))
    assert (
        hybrid.guide == cvae.guide
        and isinstance(hybrid.loss, HybridELBO)
        and hybrid.loss.alpha == 0.3
    )


def test_config_diff_names_nested_keys_with_dots():
    stored = {
        "model": "cvae",
        "profile": {"max_epochs": 50, "patience": 3},
        "baseline": {"profile": {"batch_size": 128}, "seed": 0},
    }
    wanted = {
        "model": "cvae",
        "profile": {"max_epochs": 2, "patience": 3},
        "baseline": {"profile": {"batch_size": 64}, "seed": 0},
        "extra": 1,
    }
    assert checkpoints.config_diff(stored, wanted) == {
        "baseline.profile.batch_size": (128, 64),
        "extra": (None, 1),
        "profile.max_epochs": (50, 2),
    }
    assert checkpoints.config_diff(stored, stored) == {}
    # a dict against a scalar is one difference at that key, not a crash
    assert checkpoints.config_diff({"a": {"b": 1}}, {"a": 2}) == {"a": ({"b": 1}, 2)}


def test_bf16_training_keeps_fp32_weights_and_its_own_cache_file(
    tiny_splits, tiny_spec, monkeypatch
):
    from cvae_helpers import training
    from cvae_helpers.pipeline import cached_models

    # autocast works anywhere
    monkeypatch.setattr(training, "bf16_supported", lambda device: True)
    spec = replace(tiny_spec, precision="bf16")
    baseline, _ = train_baseline(tiny_splits, spec, progress=False)
    cvae, history = train_cvae(tiny_splits, baseline, spec, progress=False)
    assert all(p.dtype == torch.float32 for p in cvae.parameters())
    assert all(math.isfinite(v) for v in history["val_loss"] + history["train_loss"])
    fp32_paths, bf16_paths = (
        [m.path for m in cached_models(s)] for s in (tiny_spec, spec)
    )
    assert (
        bf16_paths[1].name == "cvae_pyz_bf16.pt" and fp32_paths[1].name == "cvae_pyz.pt"
    )
    assert (
        bf16_paths[0].name == "baseline_bf16.pt" and fp32_paths[0].name == "baseline.pt"
    )
    assert baseline_config(spec)["precision"] == "bf16"
    # the same seed in fp32 trains to other numbers: the switch really changes the
    # arithmetic
    fp32_spec = replace(spec, precision="fp32")
    _, fp32_history = train_cvae(tiny_splits, baseline, fp32_spec, progress=False)
    assert fp32_history["train_loss"] != history["train_loss"]
    assert fp32_history["train_loss"] == pytest.approx(
        history["train_loss"], rel=0.05
    )  # but not others


def test_an_unfinished_run_of_the_code_before_gets_a_clear_error(
    tiny_splits, tiny_spec, tmp_path
):
    """Before 2026-12-04 Pyro's SVI (one Adam per parameter) or a second engine trained
    the models, and their histories named it (``engines``): an interrupted run of that
    code keeps an optimizer state this code cannot resume, and says so instead of a
    KeyError or a silently restarted Adam. A finished one is reused."""
    spec = replace(
        tiny_spec,
        profile=get_profile("quick", max_epochs=3, patience=10, batch_size=32),
    )
    path = tmp_path / "cvae.pt"
    with pytest.raises(_Interrupt):
        train_cvae(
            tiny_splits,
            BaselineNet(),
            spec,
            checkpoint_path=path,
            progress=False,
            after_save=_stop_after_two,
        )
    stored = load_checkpoint(path)
    history = stored["history"]
    history["engines"] = ["pyro"] * len(history.pop("trained_with"))
    save_checkpoint(path, stored)
    with pytest.raises(CheckpointMismatchError, match="earlier version of this code"):
        train_cvae(
            tiny_splits, BaselineNet(), spec, checkpoint_path=path, progress=False
        )


def _batch(splits, n=16):
    xs, ys = splits.train.inputs[:n], splits.train.targets[:n]
    return xs, ys, BaselineNet().requires_grad_(False)(xs)


def _weights(module):
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize(
    ("family", "analytic_kl"),
    [("cvae", False), ("cvae", True), ("gsnn", False), ("hybrid", False)],
)
def test_the_books_step_computes_what_svi_computes(
    tiny_splits, tiny_spec, family, analytic_kl
):
    """The levers around the step (Pyro's loss with one fused Adam, the loss kept on
    the device) change no number: from the same random state the step's loss and
    gradients are SVI's, and after a few steps the weights agree up to float
    rounding."""
    spec = replace(
        tiny_spec.with_family(family),
        profile=tiny_spec.profile.replace(analytic_kl=analytic_kl),
    )
    batch = _batch(tiny_splits)
    models, losses, grads = [], [], []
    for make in (make_svi, make_steps):
        torch.manual_seed(0)
        cvae = CVAE(
            z_dim=8, hidden_1=32, hidden_2=32, recognition=spec.family.recognition
        )
        pyro.clear_param_store()
        steps = make(cvae, spec)
        torch.manual_seed(1)
        if make is make_svi:  # SVI's gradient, before its optimizer step
            loss = steps.loss_and_grads(steps.model, steps.guide, *batch)
        else:
            loss = steps.loss(*batch)
            loss.backward()
        grads.append([p.grad.clone() for p in cvae.parameters() if p.grad is not None])
        for p in cvae.parameters():
            p.grad = None
        torch.manual_seed(2)
        losses.append([float(steps.step(*batch)) for _ in range(5)])
        models.append(cvae)
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for a, b in zip(_weights(models[0]), _weights(models[1]), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    # the loss stays on the device: the loop reads it once per epoch
    assert isinstance(make_steps(models[1], spec).step(*batch), torch.Tensor)
    pyro.clear_param_store()


def test_the_books_baseline_step_computes_the_textbook_step(tiny_splits, tiny_spec):
    """One fused Adam and the loss kept on the device: the same losses and, after a
    few steps, the same weights as torch's per-tensor Adam read back every step."""
    xs, ys, _ = _batch(tiny_splits)
    nets, losses = [], []
    for book in (False, True):
        torch.manual_seed(0)
        net = BaselineNet(hidden_1=32, hidden_2=32)
        lr = tiny_spec.profile.training.learning_rate
        step = baseline_steps(net, tiny_spec).step if book else None
        step = step or textbook_baseline_step(net, lr)
        losses.append([float(step(xs, ys)) for _ in range(5)])
        nets.append(net)
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    for a, b in zip(_weights(nets[0]), _weights(nets[1]), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_bf16_autocast_computes_the_fp32_step_to_bf16_rounding(tiny_splits, tiny_spec):
    """The bf16 lever: the same loss under torch.autocast. Its value and gradient are
    the fp32 ones up to bf16's rounding (8 bits of mantissa in the matmuls), and a step
    leaves the weights in fp32."""
    batch = _batch(tiny_splits, 64)
    results = []
    for autocast in (None, torch.bfloat16):
        torch.manual_seed(0)
        cvae = CVAE(z_dim=8, hidden_1=32, hidden_2=32)
        pyro.clear_param_store()
        steps = make_steps(cvae, tiny_spec)
        steps.autocast = autocast
        torch.manual_seed(1)
        with steps.autocasting(batch[0].device):
            loss = steps.loss(*batch)
        loss.backward()
        grads = torch.cat(
            [p.grad.flatten() for p in cvae.parameters() if p.grad is not None]
        )
        results.append((loss.detach(), grads))
        steps.optimizer.step()
        assert all(p.dtype == torch.float32 for p in cvae.parameters())
    (loss32, grad32), (loss16, grad16) = results
    assert loss16.dtype == torch.float32 and not torch.equal(loss16, loss32)
    assert loss16.item() == pytest.approx(loss32.item(), rel=1e-2)
    assert (grad16 - grad32).norm() < 0.05 * grad32.norm()
    pyro.clear_param_store()
