"""Training with early stopping, resumable checkpoints and clear errors on a non-finite loss.

Both trainers share :func:`fit`: one pass over the training batches, one validation loss,
early stopping on that loss (never on the test set), a checkpoint after every epoch, and the
best weights restored at the end.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from pyro.infer import Trace_ELBO
from tqdm.auto import tqdm

from .checkpoints import load_checkpoint, save_checkpoint
from .config import Profile, get_profile, resolve_device, set_seed
from .data import QuadrantSplits, TensorBatches
from .models import CVAE, BaselineNet, masked_bce

EVAL_BATCH_SIZE = 1000


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass
class FitResult:
    """What :func:`fit` hands back; ``history`` is also stored in the checkpoint."""

    history: dict
    resumed_from_epoch: int
    reused: bool


def make_adam(params, lr: float) -> torch.optim.Adam:
    """One Adam over all parameters, fused into a single kernel where this torch supports it."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch: no fused Adam on this device
        return torch.optim.Adam(params, lr=lr)


def _rng_state(loader: TensorBatches) -> dict:
    state = {"torch": torch.get_rng_state(), "loader": loader.generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(loader: TensorBatches, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    loader.generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fit(
    *,
    module: torch.nn.Module,
    trainable: torch.nn.Module | list[torch.nn.Module],
    loss_fn: Callable[..., torch.Tensor],
    train_tensors: tuple[torch.Tensor, ...],
    val_loss_fn: Callable[[], float],
    config: dict,
    profile: Profile,
    seed: int,
    label: str,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    after_save: Callable[[int], None] | None = None,
) -> FitResult:
    """Train ``module`` with Adam and early stopping on ``val_loss_fn``.

    Args:
        module: what the checkpoint stores (``state_dict``).
        trainable: the submodules whose parameters Adam updates.
        loss_fn: ``loss_fn(*batch)`` gives the loss summed over the batch (nats).
        train_tensors: tensors batched together, first dimension = items.
        val_loss_fn: validation loss in nats per image, computed without gradients.
        config: the full configuration; a checkpoint made by another one is refused.
        label: names the run in progress bars and error messages, e.g. "CVAE, 2 quadrants".
        checkpoint_path: where to resume from and save to; ``None`` keeps everything in memory.
        on_epoch_end: called as ``on_epoch_end(epoch, history)`` after each epoch.
        after_save: called as ``after_save(epoch)`` once an epoch's checkpoint is on disk (tests
            interrupt training there to check resuming).
    """
    trainable = trainable if isinstance(trainable, list) else [trainable]
    params = [p for part in trainable for p in part.parameters()]
    optimizer = make_adam(params, profile.learning_rate)
    set_seed(seed)
    loader = TensorBatches(*train_tensors, batch_size=profile.batch_size, shuffle=True, seed=seed)
    history: dict = {"train_loss": [], "val_loss": [], "epoch_seconds": [], "best_epoch": None,
                     "best_val_loss": math.inf, "stopped_early": False}
    best_state = copy.deepcopy(module.state_dict())
    bad_epochs, start_epoch = 0, 1

    if checkpoint_path is not None and Path(checkpoint_path).is_file():
        state = load_checkpoint(checkpoint_path, config)
        module.load_state_dict(state["model_state"])
        history = state["history"]
        if state["status"] == "finished":
            return FitResult(history, resumed_from_epoch=state["epoch"], reused=True)
        optimizer.load_state_dict(state["optimizer_state"])
        best_state, bad_epochs = state["best_state"], state["bad_epochs"]
        _set_rng_state(loader, state["rng"])
        start_epoch = state["epoch"] + 1

    def save(status: str, epoch: int) -> None:
        if checkpoint_path is None:
            return
        save_checkpoint(checkpoint_path, {
            "config": config, "status": status, "epoch": epoch, "history": history,
            "model_state": module.state_dict(), "optimizer_state": optimizer.state_dict(),
            "best_state": best_state if status == "running" else None,
            "bad_epochs": bad_epochs, "rng": _rng_state(loader),
        })

    epochs = tqdm(range(start_epoch, profile.max_epochs + 1), desc=label, disable=not progress,
                  initial=start_epoch - 1, total=profile.max_epochs, unit="epoch")
    epoch = start_epoch - 1
    for epoch in epochs:
        for part in trainable:
            part.train()
        started, total, count = time.perf_counter(), 0.0, 0
        for batch_index, batch in enumerate(loader, start=1):
            loss = loss_fn(*batch)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"{label}: the training loss is {loss.item()} at epoch {epoch}, batch "
                    f"{batch_index} of {len(loader)}. Lower the learning rate (now "
                    f"{profile.learning_rate}) or check the inputs of this batch; the last good "
                    f"checkpoint is {checkpoint_path or 'not kept (no checkpoint path)'}."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            count += batch[0].shape[0]
        for part in trainable:
            part.eval()
        val_loss = val_loss_fn()
        history["train_loss"].append(total / count)
        history["val_loss"].append(val_loss)
        history["epoch_seconds"].append(time.perf_counter() - started)
        if val_loss < history["best_val_loss"]:
            history["best_val_loss"], history["best_epoch"] = val_loss, epoch
            best_state, bad_epochs = copy.deepcopy(module.state_dict()), 0
        else:
            bad_epochs += 1
        epochs.set_postfix(train=f"{total / count:.2f}", val=f"{val_loss:.2f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
        if bad_epochs >= profile.patience:
            history["stopped_early"] = True
            break
        if epoch < profile.max_epochs:
            save("running", epoch)
            if after_save is not None:
                after_save(epoch)
    epochs.close()
    module.load_state_dict(best_state)
    save("finished", epoch)
    return FitResult(history, resumed_from_epoch=start_epoch - 1, reused=False)


def baseline_config(num_quadrant_inputs: int, profile: Profile, seed: int,
                    hidden_1: int = 500, hidden_2: int = 500) -> dict:
    """Everything that determines a trained baseline."""
    return {"model": "baseline", "num_quadrant_inputs": num_quadrant_inputs,
            "hidden_1": hidden_1, "hidden_2": hidden_2, "seed": seed,
            "profile": profile.as_dict()}


@torch.no_grad()
def batched(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor,
            batch_size: int = EVAL_BATCH_SIZE) -> torch.Tensor:
    """``fn`` over aligned tensors in batches, outputs concatenated along the first dimension."""
    n = tensors[0].shape[0]
    return torch.cat([fn(*(t[i:i + batch_size] for t in tensors)) for i in range(0, n, batch_size)])


def train_baseline(
    splits: QuadrantSplits,
    *,
    profile: Profile | None = None,
    seed: int = 0,
    hidden_1: int = 500,
    hidden_2: int = 500,
    checkpoint_path: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    after_save: Callable[[int], None] | None = None,
) -> tuple[BaselineNet, dict]:
    """Train (or reuse, or resume) the baseline MLP with the masked BCE.

    Returns the network with its best validation weights, in eval mode, and its history
    (``train_loss`` and ``val_loss`` per epoch, in nats per image).
    """
    profile = profile or get_profile()
    device = resolve_device(device)
    splits = splits.to(device)
    set_seed(seed)  # the initial weights depend on the seed only
    net = BaselineNet(hidden_1, hidden_2).to(device)
    q = splits.num_quadrant_inputs

    def loss_fn(inputs, targets):
        return masked_bce(net.logits(inputs), targets).sum()

    def val_loss() -> float:
        val = splits.val
        return batched(lambda x, y: masked_bce(net.logits(x), y), val.inputs, val.targets).mean().item()

    result = fit(module=net, trainable=net, loss_fn=loss_fn,
                 train_tensors=(splits.train.inputs, splits.train.targets), val_loss_fn=val_loss,
                 config=baseline_config(q, profile, seed, hidden_1, hidden_2), profile=profile,
                 seed=seed, label=f"baseline, {q} quadrant{'s' * (q > 1)}",
                 checkpoint_path=checkpoint_path, progress=progress, after_save=after_save)
    net.eval()
    return net, result.history


def cvae_config(num_quadrant_inputs: int, profile: Profile, seed: int, model: CVAE,
                baseline_cfg: dict) -> dict:
    """Everything that determines a trained CVAE, including the baseline it leans on."""
    return {"model": "cvae", "num_quadrant_inputs": num_quadrant_inputs, "seed": seed,
            **model.config.as_dict(), "profile": profile.as_dict(), "baseline": baseline_cfg}


def train_cvae(
    splits: QuadrantSplits,
    baseline: BaselineNet,
    *,
    baseline_cfg: dict,
    profile: Profile | None = None,
    seed: int = 0,
    z_dim: int = 200,
    hidden_1: int = 500,
    hidden_2: int = 500,
    decoder_sees_input: bool = False,
    checkpoint_path: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    snapshot_inputs: torch.Tensor | None = None,
    snapshot_samples: int = 3,
) -> tuple[CVAE, dict]:
    """Train (or reuse, or resume) the CVAE by stochastic variational inference.

    Each step minimises Pyro's ``Trace_ELBO`` loss (the negative ELBO) with one Adam over the
    prior, recognition and generation networks; the baseline stays frozen, so its guess y_hat is
    computed once per split instead of at every step.

    ``snapshot_inputs`` ``(k, 28, 28)``: held-out inputs whose completions are recorded after
    every epoch (``history["snapshots"]``, uint8 ``(epochs, snapshot_samples, k, 784)``), with
    fixed noise drawn from its own generator so that recording them changes no training number.

    Returns the CVAE with its best validation weights, in eval mode, and its history.
    """
    profile = profile or get_profile()
    device = resolve_device(device)
    splits = splits.to(device)
    set_seed(seed)
    cvae = CVAE(z_dim, hidden_1, hidden_2, baseline=copy.deepcopy(baseline),
                decoder_sees_input=decoder_sees_input).to(device)
    cvae.baseline.eval()
    y_hat_train = batched(cvae.baseline_guess, splits.train.inputs)
    y_hat_val = batched(cvae.baseline_guess, splits.val.inputs)
    elbo = Trace_ELBO()
    q = splits.num_quadrant_inputs

    def loss_fn(inputs, targets, y_hat):
        return elbo.differentiable_loss(cvae.model, cvae.guide, inputs, targets, y_hat)

    def val_loss() -> float:
        val = splits.val
        losses = batched(lambda x, y, yh: loss_fn(x, y, yh).reshape(1), val.inputs, val.targets,
                         y_hat_val)
        return losses.sum().item() / len(val)

    hook = None
    if snapshot_inputs is not None:
        snapshot_inputs = snapshot_inputs.to(device)
        noise = torch.randn(snapshot_samples, snapshot_inputs.shape[0], z_dim,
                            generator=torch.Generator().manual_seed(seed)).to(device)

        def hook(epoch: int, history: dict) -> None:
            probs = cvae.sample(snapshot_inputs, noise=noise)
            history.setdefault("snapshots", []).append((probs * 255).round().to(torch.uint8).cpu())
            history["snapshot_inputs"] = snapshot_inputs.cpu()

    result = fit(module=cvae, trainable=[cvae.prior_net, cvae.recognition_net, cvae.generation_net],
                 loss_fn=loss_fn,
                 train_tensors=(splits.train.inputs, splits.train.targets, y_hat_train),
                 val_loss_fn=val_loss, config=cvae_config(q, profile, seed, cvae, baseline_cfg),
                 profile=profile, seed=seed, label=f"CVAE, {q} quadrant{'s' * (q > 1)}",
                 checkpoint_path=checkpoint_path, progress=progress, on_epoch_end=hook)
    cvae.eval()
    return cvae, result.history
