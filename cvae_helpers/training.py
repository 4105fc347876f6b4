"""Training with early stopping, resumable checkpoints and clear errors on a non-finite loss.

Both trainers share :func:`fit`: one pass over the training batches (:func:`train_epoch`), one
validation loss, early stopping on that loss (never on the test set), a checkpoint after every
epoch (:class:`TrainingState`), and the best weights restored at the end.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoints import load_checkpoint, save_checkpoint
from .config import FAMILY_LABELS, Profile, RunSpec, autocast_dtype, set_seed
from .data import QuadrantSplits, TensorBatches, batched, hidden_pixels, quadrant_label
from .evaluation import baseline_nll
from .models import CVAE, BaselineNet, masked_bce


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


@dataclass
class TrainingState:
    """Everything an interrupted run needs to continue exactly where it stopped."""

    history: dict = field(default_factory=lambda: {
        "train_loss": [], "val_loss": [], "epoch_seconds": [], "best_epoch": None,
        "best_val_loss": math.inf, "stopped_early": False})
    best_state: dict | None = None
    bad_epochs: int = 0
    epoch: int = 0  # the last finished epoch

    def record(self, module: torch.nn.Module, train_loss: float, val_loss: float,
               seconds: float) -> None:
        """Append one epoch to the history; keep the weights if validation improved."""
        self.epoch += 1
        self.history["train_loss"].append(train_loss)
        self.history["val_loss"].append(val_loss)
        self.history["epoch_seconds"].append(seconds)
        if val_loss < self.history["best_val_loss"]:
            self.history["best_val_loss"], self.history["best_epoch"] = val_loss, self.epoch
            self.best_state, self.bad_epochs = copy.deepcopy(module.state_dict()), 0
        else:
            self.bad_epochs += 1

    def save(self, path: str | Path | None, status: str, config: dict, module: torch.nn.Module,
             optimizer: torch.optim.Optimizer, loader: TensorBatches) -> None:
        """Write a checkpoint (``status`` "running" or "finished"); ``path=None`` keeps nothing."""
        if path is None:
            return
        save_checkpoint(path, {
            "config": config, "status": status, "epoch": self.epoch, "history": self.history,
            "model_state": module.state_dict(), "optimizer_state": optimizer.state_dict(),
            "best_state": self.best_state if status == "running" else None,
            "bad_epochs": self.bad_epochs, "rng": _rng_state(loader),
        })

    @classmethod
    def load(cls, stored: dict, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
             loader: TensorBatches) -> TrainingState:
        """Put a running checkpoint's weights, optimizer and random state back in place."""
        module.load_state_dict(stored["model_state"])
        optimizer.load_state_dict(stored["optimizer_state"])
        _set_rng_state(loader, stored["rng"])
        return cls(stored["history"], stored["best_state"], stored["bad_epochs"], stored["epoch"])


def train_step(loss_fn: Callable[..., torch.Tensor], batch: tuple[torch.Tensor, ...],
               optimizer: torch.optim.Optimizer, *, autocast: torch.dtype | None = None,
               scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """One gradient step on ``loss_fn(*batch)``; returns the loss, detached, on its device.

    ``autocast``: the dtype of mixed-precision matmuls (``None``: fp32); ``scaler`` scales fp16
    losses so that small gradients survive. Training and the speed benchmark both step with it.
    """
    with torch.autocast(batch[0].device.type, dtype=autocast, enabled=autocast is not None):
        loss = loss_fn(*batch)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.detach()


def train_epoch(loss_fn: Callable[..., torch.Tensor], loader: TensorBatches,
                optimizer: torch.optim.Optimizer, *, label: str, epoch: int, lr: float,
                checkpoint_path: str | Path | None, autocast: torch.dtype | None = None,
                scaler: torch.amp.GradScaler | None = None) -> float:
    """One pass over ``loader``: a :func:`train_step` per batch; returns the mean loss per item.

    The losses stay on the device until the epoch ends: one host round-trip per epoch, not per
    step, and a non-finite loss is reported then.
    """
    losses, count = [], 0
    for batch in loader:
        losses.append(train_step(loss_fn, batch, optimizer, autocast=autocast, scaler=scaler))
        count += batch[0].shape[0]
    losses = torch.stack(losses).double().cpu()
    bad = (~torch.isfinite(losses)).nonzero().flatten().tolist()
    if bad:
        raise NonFiniteLossError(
            f"{label}: the training loss is {losses[bad[0]].item()} at epoch {epoch}, batch "
            f"{bad[0] + 1} of {len(loader)}. Lower the learning rate (now {lr}) or check the "
            f"inputs of this batch; the last good checkpoint is "
            f"{checkpoint_path or 'not kept (no checkpoint path)'}."
        )
    return losses.sum().item() / count


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
    autocast: torch.dtype | None = None,
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
        autocast: the dtype of mixed-precision training (bf16, or fp16 with a gradient scaler
            on a GPU without bf16); ``None`` trains in fp32. Validation always runs in fp32.
        on_epoch_end: called as ``on_epoch_end(epoch, history)`` after each epoch.
        after_save: called as ``after_save(epoch)`` once an epoch's checkpoint is on disk (tests
            interrupt training there to check resuming).
    """
    trainable = trainable if isinstance(trainable, list) else [trainable]
    optimizer = make_adam([p for part in trainable for p in part.parameters()],
                          profile.learning_rate)
    scaler = torch.amp.GradScaler() if autocast == torch.float16 else None
    set_seed(seed)
    loader = TensorBatches(*train_tensors, batch_size=profile.batch_size, shuffle=True, seed=seed)
    state = TrainingState(best_state=copy.deepcopy(module.state_dict()))
    if checkpoint_path is not None and Path(checkpoint_path).is_file():
        stored = load_checkpoint(checkpoint_path, config)
        if stored["status"] == "finished":
            module.load_state_dict(stored["model_state"])
            print(f"reusing {label}: finished after {stored['epoch']} epochs ({_shown(checkpoint_path)})")
            return FitResult(stored["history"], resumed_from_epoch=stored["epoch"], reused=True)
        state = TrainingState.load(stored, module, optimizer, loader)
        print(f"resuming {label}, after epoch {state.epoch} of at most {profile.max_epochs} "
              f"({_shown(checkpoint_path)})")
    resumed_from = state.epoch

    epochs = tqdm(range(state.epoch + 1, profile.max_epochs + 1), desc=label, unit="epoch",
                  disable=not progress, initial=state.epoch, total=profile.max_epochs)
    for epoch in epochs:
        for part in trainable:
            part.train()
        started = time.perf_counter()
        train_loss = train_epoch(loss_fn, loader, optimizer, label=label, epoch=epoch,
                                 lr=profile.learning_rate, checkpoint_path=checkpoint_path,
                                 autocast=autocast, scaler=scaler)
        for part in trainable:
            part.eval()
        val_loss = val_loss_fn()
        state.record(module, train_loss, val_loss, time.perf_counter() - started)
        epochs.set_postfix(train=f"{train_loss:.2f}", val=f"{val_loss:.2f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, state.history)
        if state.bad_epochs >= profile.patience:
            state.history["stopped_early"] = True
            break
        if epoch < profile.max_epochs:
            state.save(checkpoint_path, "running", config, module, optimizer, loader)
            if after_save is not None:
                after_save(epoch)
    epochs.close()
    module.load_state_dict(state.best_state)
    state.save(checkpoint_path, "finished", config, module, optimizer, loader)
    return FitResult(state.history, resumed_from_epoch=resumed_from, reused=False)


def _shown(path: str | Path) -> str:
    """A checkpoint path as a message shows it: relative to the working directory when below it,
    else its last three parts (profile, setting, file), which name it within any cache."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(Path("…", *path.parts[-3:]))


def baseline_config(spec: RunSpec, hidden_1: int = 500, hidden_2: int = 500) -> dict:
    """Everything that determines a trained baseline: its checkpoint's cache key."""
    return {"model": "baseline", "num_quadrant_inputs": spec.num_quadrant_inputs,
            "hidden_1": hidden_1, "hidden_2": hidden_2, "seed": spec.seed,
            "precision": spec.precision, "profile": spec.profile.as_dict()}


def train_baseline(
    splits: QuadrantSplits,
    spec: RunSpec,
    *,
    hidden_1: int = 500,
    hidden_2: int = 500,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    after_save: Callable[[int], None] | None = None,
) -> tuple[BaselineNet, dict]:
    """Train (or reuse, or resume) the baseline MLP with the masked BCE.

    Returns the network with its best validation weights, in eval mode, on ``spec.device``, and
    its history (``train_loss`` and ``val_loss`` per epoch, in nats per image).
    """
    splits = splits.to(spec.device)
    set_seed(spec.seed)  # the initial weights depend on the seed only
    net = BaselineNet(hidden_1, hidden_2).to(spec.device)

    def loss_fn(inputs, targets):
        return masked_bce(net.logits(inputs), targets).sum()

    def val_loss() -> float:
        return baseline_nll(net, splits.val.inputs, splits.val.targets).mean().item()

    result = fit(module=net, trainable=net, loss_fn=loss_fn,
                 train_tensors=(splits.train.inputs, splits.train.targets), val_loss_fn=val_loss,
                 config=baseline_config(spec, hidden_1, hidden_2), profile=spec.profile,
                 seed=spec.seed, label=f"baseline, {quadrant_label(spec.num_quadrant_inputs)}",
                 checkpoint_path=checkpoint_path, progress=progress,
                 autocast=autocast_dtype(spec.precision, spec.device), after_save=after_save)
    net.eval()
    return net, result.history


# The training loss each family's checkpoints record.
FAMILY_LOSSES = {"cvae": "neg_elbo", "gsnn": "gsnn_nll", "hybrid": "hybrid"}


def cvae_config(spec: RunSpec, model: CVAE, baseline_cfg: dict) -> dict:
    """Everything that determines a trained CVAE (or GSNN, or hybrid), including the baseline it
    leans on. The family (and the hybrid's alpha) is a key only for the GSNN and the hybrid, so
    that the CVAE's key, and every CVAE checkpoint cached before the families existed, stay valid.
    """
    config = {"model": "cvae", "num_quadrant_inputs": spec.num_quadrant_inputs, "seed": spec.seed,
              **model.config.as_dict(), "loss": FAMILY_LOSSES[spec.family],
              "precision": spec.precision, "profile": spec.profile.as_dict(),
              "baseline": baseline_cfg}
    if spec.family != "cvae":
        config["family"] = spec.family
    if spec.family == "hybrid":
        config["alpha"] = spec.alpha
    return config


def train_cvae(
    splits: QuadrantSplits,
    baseline: BaselineNet,
    spec: RunSpec,
    *,
    baseline_cfg: dict,
    z_dim: int = 200,
    hidden_1: int = 500,
    hidden_2: int = 500,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    snapshot_inputs: torch.Tensor | None = None,
    snapshot_samples: int = 3,
) -> tuple[CVAE, dict]:
    """Train (or reuse, or resume) the CVAE by stochastic variational inference.

    Each step minimises the negative ELBO of ``model`` and ``guide`` with one Adam over the
    prior, recognition and generation networks. The loss is :meth:`CVAE.neg_elbo`: what Pyro's
    ``Trace_ELBO`` computes, to the same number and gradients, without tracing and with the
    likelihood of the hidden pixels only. The baseline stays frozen, so its guess y_hat is
    computed once per split instead of at every step. ``spec.decoder_sees_input`` picks the
    generation network, ``spec.precision`` the arithmetic of the training steps.

    ``spec.family`` picks the objective, and validation early-stops on the same one:
    ``"gsnn"`` trains the prior and generation networks alone with :meth:`CVAE.gsnn_loss` (the
    model has no recognition network); ``"hybrid"`` minimises :meth:`CVAE.hybrid_loss` with
    weight ``spec.alpha`` on the CVAE's term.

    ``snapshot_inputs`` ``(k, 28, 28)``: held-out inputs whose completions are recorded after
    every epoch (``history["snapshots"]``, uint8 ``(epochs, snapshot_samples, k, 784)``), with
    fixed noise drawn from its own generator so that recording them changes no training number.

    Returns the CVAE with its best validation weights, in eval mode, and its history.
    """
    splits = splits.to(spec.device)
    set_seed(spec.seed)
    cvae = CVAE(z_dim, hidden_1, hidden_2, baseline=copy.deepcopy(baseline),
                decoder_sees_input=spec.decoder_sees_input,
                recognition=spec.family != "gsnn").to(spec.device)
    cvae.baseline.eval()
    y_hat_train = batched(cvae.baseline_guess, splits.train.inputs)
    y_hat_val = batched(cvae.baseline_guess, splits.val.inputs)
    pixels = hidden_pixels(splits.train.inputs)  # the same in every image of a setting

    family_loss = cvae.training_loss(spec.family, spec.alpha)

    def loss_fn(inputs, targets, y_hat):
        return family_loss(inputs, targets, y_hat, pixels)

    def val_loss() -> float:
        val = splits.val
        losses = batched(lambda x, y, yh: loss_fn(x, y, yh).reshape(1), val.inputs, val.targets,
                         y_hat_val)
        return losses.sum().item() / len(val)

    hook = None
    if snapshot_inputs is not None:
        snapshot_inputs = snapshot_inputs.to(spec.device)
        noise = cvae.latent_noise(snapshot_samples, snapshot_inputs.shape[0],
                                  torch.Generator().manual_seed(spec.seed))

        def hook(epoch: int, history: dict) -> None:
            probs = cvae.sample(snapshot_inputs, noise=noise)
            history.setdefault("snapshots", []).append((probs * 255).round().to(torch.uint8).cpu())
            history["snapshot_inputs"] = snapshot_inputs.cpu()

    trainable = [net for net in (cvae.prior_net, cvae.recognition_net, cvae.generation_net)
                 if net is not None]
    result = fit(module=cvae, trainable=trainable, loss_fn=loss_fn,
                 train_tensors=(splits.train.inputs, splits.train.targets, y_hat_train),
                 val_loss_fn=val_loss, config=cvae_config(spec, cvae, baseline_cfg),
                 profile=spec.profile, seed=spec.seed,
                 label=f"{FAMILY_LABELS[spec.family]}, {quadrant_label(spec.num_quadrant_inputs)}",
                 checkpoint_path=checkpoint_path, progress=progress,
                 autocast=autocast_dtype(spec.precision, spec.device), on_epoch_end=hook)
    cvae.eval()
    return cvae, result.history
