"""Training: Pyro's loss trains the CVAE family, plain PyTorch the baseline.

Both go through one loop, :func:`fit`, with early stopping on the validation loss. A
step is the family's Pyro loss with one fused Adam (:func:`make_steps`; :func:`make_svi`
is the same step as Pyro's ``SVI`` takes it). :class:`TrainingRun` keeps the history,
the best weights and a checkpoint after every epoch (an interrupted run resumes), and
turns a NaN into a message a reader can act on.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI
from pyro.optim import Adam
from tqdm.auto import tqdm

from .checkpoints import CheckpointMismatchError, load_checkpoint, save_checkpoint
from .config import Profile, RunSpec, bf16_supported
from .data import (
    EVAL_BATCH_SIZE,
    MaskedSplit,
    QuadrantSplits,
    TensorBatches,
    batched,
    quadrant_label,
)
from .models import CVAE, BaselineNet, CVAEConfig, masked_bce


def make_svi(cvae: CVAE, spec: RunSpec) -> SVI:
    """The textbook step:
    ``SVI(cvae.model, guide, Adam(...), loss=Trace_ELBO())``;
    :func:`make_steps` computes the same step faster."""
    family = spec.family
    return SVI(
        cvae.model,
        family.guide(cvae),
        Adam({"lr": spec.profile.training.learning_rate}),
        loss=family.svi_loss(cvae, spec.profile.training.analytic_kl),
    )


def make_steps(cvae: CVAE, spec: RunSpec) -> TrainingSteps:
    """The CVAE family's training steps: Pyro's loss for ``spec.family``
    (``Trace_ELBO`` for the CVAE) with one Adam over the networks it trains."""
    family, training = spec.family, spec.profile.training
    elbo = family.svi_loss(cvae, training.analytic_kl)
    guide = family.guide(cvae)

    def loss(*batch: torch.Tensor) -> torch.Tensor:
        return elbo.differentiable_loss(cvae.model, guide, *batch)

    return TrainingSteps(
        loss,
        trained_parameters(cvae),
        f"{type(elbo).__name__}, one Adam",
        training.learning_rate,
        training.lr_decay,
        autocast_dtype(spec.precision, spec.device),
    )


def trained_parameters(cvae: CVAE) -> list[torch.nn.Parameter]:
    """What training updates: every network but the frozen baseline."""
    return [
        p for name, p in cvae.named_parameters() if not name.startswith("baseline.")
    ]


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype of training's ``torch.autocast``, or ``None`` for plain fp32."""
    if precision == "fp32":
        return None
    return torch.bfloat16 if bf16_supported(device) else torch.float16


def one_adam(params, lr: float) -> torch.optim.Adam:
    """One Adam over all ``params``, fused into one kernel where the device has one."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused Adam for this device
        return torch.optim.Adam(params, lr=lr)


class TrainingSteps:
    """A training step shaped like Pyro's ``SVI``: ``step(*batch)`` takes a gradient
    step on ``loss(*batch)`` (summed over the batch), ``evaluate_loss(*batch)`` scores a
    batch without gradients. ``name`` says what trained a model, in its history;
    ``autocast``: the dtype of ``torch.autocast`` around the loss (``None``: fp32).
    """

    def __init__(
        self,
        loss: Callable[..., torch.Tensor],
        params,
        name: str,
        lr: float,
        lr_decay: float | None = None,
        autocast: torch.dtype | None = None,
    ) -> None:
        self.loss, self.name, self.autocast = loss, name, autocast
        self.optimizer = one_adam(params, lr)
        self.scheduler = None
        if lr_decay is not None:
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, factor=lr_decay, patience=0
            )
        # fp16 (a GPU without bf16) needs its small gradients scaled up to survive
        self.scaler = torch.amp.GradScaler() if autocast == torch.float16 else None

    def autocasting(self, device: torch.device):
        """``torch.autocast`` in ``self.autocast`` on ``device``'s type, or nothing."""
        return torch.autocast(
            device.type, self.autocast, enabled=self.autocast is not None
        )

    def step(self, *batch: torch.Tensor) -> torch.Tensor:
        with self.autocasting(batch[0].device):
            loss = self.loss(*batch)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    @torch.no_grad()
    def evaluate_loss(self, *batch: torch.Tensor) -> torch.Tensor:
        return self.loss(*batch)

    @property
    def lr(self) -> float:
        """The learning rate the next step applies."""
        return self.optimizer.param_groups[0]["lr"]

    def decay(self, val_loss: float) -> None:
        """End of an epoch: lower the rate if ``val_loss`` did not improve."""
        if self.scheduler is not None:
            self.scheduler.step(val_loss)

    def get_state(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict()}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def set_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])


def fit(
    steps: TrainingSteps,
    train: TensorBatches,
    val: TensorBatches,
    run: TrainingRun,
) -> dict:
    """The training loop: a step per batch, the validation loss, early stopping.

    ``steps`` (:class:`TrainingSteps`) steps and scores batches as Pyro's
    ``SVI`` does; ``run`` (:class:`TrainingRun`) resumes, keeps the best
    weights and checkpoints. Returns the history: losses per epoch in nats per
    image.
    """
    for epoch in run.epochs(steps):
        train_losses = [steps.step(*batch) for batch in train]
        val_losses = [steps.evaluate_loss(*batch) for batch in val]
        if run.end_epoch(epoch, train_losses, val_losses):  # patience used up
            break
    return run.finish()


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


def baseline_steps(net: BaselineNet, spec: RunSpec) -> TrainingSteps:
    """The baseline's steps: the masked cross-entropy of the hidden pixels, and
    Adam."""

    def loss(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return masked_bce(net.logits(xs), ys).sum()

    return TrainingSteps(
        loss,
        net.parameters(),
        "masked BCE, one Adam",
        spec.profile.training.learning_rate,
        autocast=autocast_dtype(spec.precision, spec.device),
    )


def _shown(path: str | Path) -> str:
    """A checkpoint path as a message shows it: relative to the working directory, else
    its last three parts (profile, setting, file)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(Path("…", *path.parts[-3:]))


def _new_history() -> dict:
    return {
        "train_loss": [],
        "val_loss": [],
        "epoch_seconds": [],
        "trained_with": [],
        "learning_rates": [],
        "best_epoch": None,
        "best_val_loss": math.inf,
        "stopped_early": False,
    }


@dataclass
class TrainingRun:
    """The bookkeeping around :func:`fit`'s loop, for one model.

    ``config``: the checkpoint's cache key (another one's checkpoint is refused);
    ``checkpoint_path``: where to resume from and save to (``None`` keeps nothing);
    ``on_epoch_end(epoch, history)`` and ``after_save(epoch)``: hooks.
    """

    module: torch.nn.Module
    config: dict
    profile: Profile
    label: str
    train: TensorBatches
    val: TensorBatches
    checkpoint_path: str | Path | None = None
    progress: bool = True
    on_epoch_end: Callable[[int, dict], None] | None = None
    after_save: Callable[[int], None] | None = None
    history: dict = field(default_factory=_new_history)
    best_state: dict | None = None
    bad_epochs: int = 0
    epoch: int = 0  # the last finished epoch
    reused: bool = False

    def epochs(self, steps) -> Iterator[int]:
        """The epochs left to train, after those of a checkpoint; the steps' state
        (``get_state``/``set_state``) is checkpointed with the run."""
        self.steps = steps
        self.best_state = copy.deepcopy(self.module.state_dict())
        if self.checkpoint_path is not None and Path(self.checkpoint_path).is_file():
            self._restore(load_checkpoint(self.checkpoint_path, self.config))
        if self.reused:
            return
        self.bar = tqdm(
            total=self.profile.training.max_epochs,
            initial=self.epoch,
            desc=self.label,
            unit="epoch",
            disable=not self.progress,
        )
        for epoch in range(self.epoch + 1, self.profile.training.max_epochs + 1):
            self.module.train()
            self.started = time.perf_counter()
            yield epoch

    def _restore(self, stored: dict) -> None:
        self.module.load_state_dict(stored["model_state"])
        self.history, self.epoch = stored["history"], stored["epoch"]
        where = _shown(self.checkpoint_path)
        if stored["status"] == "finished":
            self.reused = True
            if self.progress:  # a quiet run (a chapter's) reuses without a word
                epochs = f"finished after {self.epoch} epochs"
                print(f"reusing {self.label}: {epochs} ({where})")
            return
        if "engines" in stored["history"]:  # an unfinished run of the code before
            raise CheckpointMismatchError(
                f"{where} was being trained by an earlier version of this code, whose "
                "optimizer kept another state: delete it to start over."
            )
        self.steps.set_state(stored["optimizer_state"])
        rng = stored["rng"]
        torch.set_rng_state(rng["torch"])
        self.train.generator.set_state(rng["loader"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.best_state, self.bad_epochs = stored["best_state"], stored["bad_epochs"]
        print(
            f"resuming {self.label}, after epoch {self.epoch} of at most "
            f"{self.profile.training.max_epochs} ({where})"
        )

    def _per_item(self, losses: Sequence, loader: TensorBatches, which: str) -> float:
        """The mean loss per item of one pass; a non-finite batch is an error."""
        # the steps' losses stay on the device: one copy to the host per pass
        values = torch.stack([torch.as_tensor(loss) for loss in losses])
        values = values.to("cpu", torch.float64)
        bad = (~torch.isfinite(values)).nonzero().flatten().tolist()
        if bad:
            what = f"the {which} loss is {values[bad[0]].item()}"
            message = self._nan_message(what, which, bad[0] + 1, len(loader))
            raise NonFiniteLossError(message)
        return values.sum().item() / loader.num_items

    def _nan_message(self, what: str, which: str, batch: int, batches: int) -> str:
        where = _shown(self.checkpoint_path) if self.checkpoint_path else "not kept"
        return (
            f"{self.label}: {what} at epoch {self.epoch + 1}, {which} batch {batch} of "
            f"{batches}. Lower the learning rate (now {self.profile.training.learning_rate}) "
            f"or check the inputs of this batch; the last good checkpoint is {where}."
        )

    @contextmanager
    def explaining_nan(self):
        """Pyro's argument checks see a NaN before the loss does: say so, with the
        batch."""
        try:
            yield
        except ValueError as error:
            if "invalid values" not in str(error):
                raise
            # a pass that ran to its end has position 0 again: the other one was running
            training = self.train.position != 0
            loader = self.train if training else self.val
            which = "training" if training else "validation"
            what = "a distribution's parameters are NaN or infinite"
            message = self._nan_message(what, which, loader.position, len(loader))
            raise NonFiniteLossError(message) from error

    def end_epoch(
        self, epoch: int, train_losses: Sequence, val_losses: Sequence
    ) -> bool:
        """Record ``epoch`` (its losses per batch), keep the best weights,
        checkpoint; ``True`` once validation has not improved for
        ``profile.training.patience`` epochs."""
        train_loss = self._per_item(train_losses, self.train, "training")
        self.module.eval()
        val_loss = self._per_item(val_losses, self.val, "validation")
        self.epoch = epoch
        learning_rate = self.steps.lr  # the rate this epoch trained with
        self.steps.decay(val_loss)
        for key, value in (
            ("train_loss", train_loss),
            ("val_loss", val_loss),
            ("epoch_seconds", time.perf_counter() - self.started),
            ("trained_with", self.steps.name),
            ("learning_rates", learning_rate),
        ):
            self.history.setdefault(key, []).append(value)
        if val_loss < self.history["best_val_loss"]:
            self.history.update(best_val_loss=val_loss, best_epoch=epoch)
            self.best_state = copy.deepcopy(self.module.state_dict())
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        self.bar.update()
        self.bar.set_postfix(train=f"{train_loss:.2f}", val=f"{val_loss:.2f}")
        if self.on_epoch_end is not None:
            self.on_epoch_end(self.epoch, self.history)
        if self.bad_epochs >= self.profile.training.patience:
            self.history["stopped_early"] = True
            return True
        if self.epoch < self.profile.training.max_epochs:
            self._save("running")
            if self.after_save is not None:
                self.after_save(self.epoch)
        return False

    def finish(self) -> dict:
        """Put the best weights back, save the finished checkpoint; return the history."""
        if not self.reused:
            self.bar.close()
            self.module.load_state_dict(self.best_state)
            self._save("finished")
        self.module.eval()
        return self.history

    def _save(self, status: str) -> None:
        if self.checkpoint_path is None:
            return
        rng = {
            "torch": torch.get_rng_state(),
            "loader": self.train.generator.get_state(),
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        save_checkpoint(
            self.checkpoint_path,
            {
                "config": self.config,
                "status": status,
                "epoch": self.epoch,
                "history": self.history,
                "model_state": self.module.state_dict(),
                "optimizer_state": self.steps.get_state(),
                "best_state": self.best_state if status == "running" else None,
                "bad_epochs": self.bad_epochs,
                "rng": rng,
            },
        )


def baseline_config(spec: RunSpec, hidden_1: int = 500, hidden_2: int = 500) -> dict:
    """Everything that determines a trained baseline: its checkpoint's cache key."""
    spec = spec.for_baseline()
    return {
        "model": "baseline",
        "num_quadrant_inputs": spec.num_quadrant_inputs,
        "hidden_1": hidden_1,
        "hidden_2": hidden_2,
        "seed": spec.seed,
        "precision": spec.precision,
        "profile": spec.profile.training_dict(),
    }


def cvae_architecture(spec: RunSpec) -> CVAEConfig:
    """The CVAE's architecture in ``spec``: the profile's width, the decoder."""
    width = spec.profile.training.hidden_units
    return CVAEConfig(
        hidden_1=width, hidden_2=width, decoder_sees_input=spec.decoder_sees_input
    )


def cvae_config(spec: RunSpec, baseline_cfg: dict | None = None) -> dict:
    """Everything that determines a trained CVAE (or GSNN, or hybrid), the
    baseline it leans on included (``baseline_cfg``, default
    :func:`baseline_config`): its checkpoint's cache key."""
    return {
        "model": "cvae",
        **spec.family.key(),
        "num_quadrant_inputs": spec.num_quadrant_inputs,
        "seed": spec.seed,
        **cvae_architecture(spec).as_dict(),
        "precision": spec.precision,
        "profile": spec.profile.training_dict(),
        "baseline": baseline_cfg or baseline_config(spec),
    }


def make_batches(
    spec: RunSpec, train: tuple[torch.Tensor, ...], val: tuple[torch.Tensor, ...]
) -> tuple[TensorBatches, TensorBatches]:
    """Shuffled training batches (seeded by ``spec``) and the validation split in
    order."""
    return (
        TensorBatches(
            *train, batch_size=spec.profile.training.batch_size, seed=spec.seed
        ),
        TensorBatches(*val, batch_size=EVAL_BATCH_SIZE, shuffle=False),
    )


def train_baseline(
    splits: QuadrantSplits,
    spec: RunSpec,
    *,
    checkpoint_path: str | Path | None = None,
    config: dict | None = None,
    progress: bool = True,
    after_save: Callable[[int], None] | None = None,
) -> tuple[BaselineNet, dict]:
    """Train (or reuse, or resume) the baseline MLP with the masked BCE.

    ``splits`` on ``spec.device``; ``config``: the cache key (default
    :func:`baseline_config`). Returns the network with its best validation
    weights, in eval mode, and its history.
    """
    config = config or baseline_config(spec)
    spec = spec.for_baseline()
    pyro.set_rng_seed(spec.seed)  # the initial weights depend on the seed only
    net = BaselineNet().to(spec.device)
    train, val = make_batches(
        spec,
        (splits.train.inputs, splits.train.targets),
        (splits.val.inputs, splits.val.targets),
    )
    run = TrainingRun(
        net,
        config,
        spec.profile,
        f"baseline, {quadrant_label(spec.num_quadrant_inputs)}",
        train,
        val,
        checkpoint_path,
        progress,
        after_save=after_save,
    )
    with run.explaining_nan():
        history = fit(baseline_steps(net, spec), train, val, run)
    return net, history


def snapshot_hook(
    cvae: CVAE, inputs: torch.Tensor, num_samples: int, seed: int
) -> Callable:
    """An ``on_epoch_end`` hook that records the completions of ``inputs``
    ``(k, 28, 28)`` (``history["snapshots"]``: uint8 ``(epochs, num_samples, k, 784)``),
    with noise of its own, so that recording them changes no training number."""
    generator = torch.Generator().manual_seed(seed)
    noise = cvae.latent_noise(num_samples, inputs.shape[0], generator)

    def hook(epoch: int, history: dict) -> None:
        probs = cvae.sample(inputs, noise=noise)
        frame = (probs * 255).round().to(torch.uint8).cpu()
        history.setdefault("snapshots", []).append(frame)
        history["snapshot_inputs"] = inputs.cpu()

    return hook


def train_cvae(
    splits: QuadrantSplits,
    baseline: BaselineNet,
    spec: RunSpec,
    *,
    checkpoint_path: str | Path | None = None,
    config: dict | None = None,
    progress: bool = True,
    snapshot_inputs: torch.Tensor | None = None,
    after_save: Callable[[int], None] | None = None,
) -> tuple[CVAE, dict]:
    """Train (or reuse, or resume) a CVAE, GSNN or hybrid (``spec.family``) with
    Pyro's loss (:func:`make_steps`).

    The baseline is frozen: its guess y_hat is computed once per split.
    ``splits`` and ``snapshot_inputs`` (:func:`snapshot_hook`) on
    ``spec.device``; ``config``: the cache key (default :func:`cvae_config`).
    Returns the model with its best validation weights, in eval mode, and its
    history.
    """
    pyro.set_rng_seed(spec.seed)
    cvae = CVAE(
        **cvae_architecture(spec).as_dict(),
        baseline=copy.deepcopy(baseline),
        recognition=spec.family.recognition,
    ).to(spec.device)
    cvae.baseline.eval()

    def with_guess(split: MaskedSplit) -> tuple[torch.Tensor, ...]:
        guess = batched(cvae.baseline_guess, split.inputs)
        return split.inputs, split.targets, guess

    train, val = with_guess(splits.train), with_guess(splits.val)
    train, val = make_batches(spec, train, val)
    hook = None
    if snapshot_inputs is not None:
        hook = snapshot_hook(cvae, snapshot_inputs, 3, spec.seed)
    label = f"{spec.family.label}, {quadrant_label(spec.num_quadrant_inputs)}"
    run = TrainingRun(
        cvae,
        config or cvae_config(spec),
        spec.profile,
        label,
        train,
        val,
        checkpoint_path,
        progress,
        hook,
        after_save,
    )
    pyro.clear_param_store()  # Pyro's parameters are this model's alone
    with run.explaining_nan():
        history = fit(make_steps(cvae, spec), train, val, run)
    pyro.clear_param_store()
    return cvae, history
