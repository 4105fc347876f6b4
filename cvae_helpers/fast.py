"""The fast engine: the book's computations, with every speed trick, in one place.

``--engine fast`` (``CVAE_ENGINE=fast``) trains and evaluates with these functions
instead of Pyro's ``SVI`` and the plain estimators of :mod:`cvae_helpers.evaluation`.
They read the same modules' weights (:mod:`cvae_helpers.models`) and compute the same
numbers: ``tests/test_fast.py`` checks every loss and gradient against ``SVI``'s on the
same random state, and every estimator against the plain one on the same noise. The
tricks:

- hand-written losses instead of Pyro's tracing (:func:`neg_elbo`, :func:`gsnn_loss`);
- only the hidden pixels' logits (``pixels``): up to 3/4 of the last layer's work
  skipped;
- p(y|x,z)'s first layer split, W [z; x] + b = W_z z + (W_x x + b), its x-half once per
  image when many z share one image (evaluation);
- oneDNN's linear (without gradients, on the CPU), behind a capability check
  (:data:`ONEDNN_LINEAR`);
- :func:`softplus_sum`, the Bernoulli normaliser with one log per 64 pixels;
- the importance weights from the noise (:func:`gaussian_log_ratio`), scored in chunks;
- fused Adam, losses kept on the device, and bf16 mixed precision
  (``--precision bf16``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from pyro.distributions import Normal
from torch.distributions import kl_divergence

from .config import RunSpec, autocast_dtype
from .data import hidden_pixels
from .families import Family
from .models import (
    CVAE,
    MIN_SCALE,
    BaselineNet,
    GaussianMLP,
    GenerationNet,
    fill_hidden,
    flatten,
    masked_bce,
)

CHUNK_ROWS = 5000  # samples × images scored at once by log_weights


def _onednn_linear_available() -> bool:
    try:
        x = torch.ones(2, 3)
        layer = torch.nn.Linear(3, 2)
        fused = torch.ops.mkldnn._linear_pointwise(
            x, layer.weight, layer.bias, "none", [], ""
        )
        return torch.allclose(fused, layer(x))
    except (AttributeError, RuntimeError):
        return False


ONEDNN_LINEAR = _onednn_linear_available()


def dense(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, relu: bool
) -> torch.Tensor:
    """``relu(x @ weight.T + bias)`` (or without the ReLU), ``x`` ``(..., in)``.

    Without gradients on the CPU in fp32 (validation, evaluation, sampling), oneDNN's
    linear runs faster here than MKL's matmul; everywhere else this is the plain
    ``F.linear``. They agree to float rounding. The ReLU is torch's, not oneDNN's fused
    one, which turns NaN into 0: a NaN input or weight stays NaN, as in the plain
    modules.
    """
    if (
        ONEDNN_LINEAR
        and not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
    ):
        flat = torch.ops.mkldnn._linear_pointwise(
            x.reshape(-1, x.shape[-1]), weight, bias, "none", [], ""
        )
        if relu:
            flat.relu_()
        return flat.reshape(*x.shape[:-1], weight.shape[0])
    out = F.linear(x, weight, bias)
    return F.relu(out) if relu else out


def full_precision(values: torch.Tensor) -> torch.Tensor:
    """``values`` in float32 if they are 16-bit (a matmul under mixed precision): the
    distributions' arithmetic never runs in bf16."""
    return values.float() if values.dtype in (torch.float16, torch.bfloat16) else values


def softplus_sum(logits: torch.Tensor) -> torch.Tensor:
    """Σ softplus(l) over the last dimension: ``(..., n)`` logits to ``(...)``.

    With gradients this is ``F.softplus(logits).sum(-1)``. Without them it uses
    softplus(l) = max(l, 0) + log(1 + e^{-|l|}) and multiplies the factors 1 + e^{-|l|},
    each in (1, 2], in groups of at most 64 before one log per group (a product stays
    below 2^64). torch's exp is several times faster than its softplus on this project's
    CPU. The two agree to at most 1e-7 nats per pixel.
    """
    if torch.is_grad_enabled():
        return F.softplus(logits).sum(-1)
    n = logits.shape[-1]
    group = max(d for d in range(1, min(n, 64) + 1) if n % d == 0)
    factors = logits.abs()
    positive_part = 0.5 * (logits.sum(-1) + factors.sum(-1))  # Σ max(l, 0)
    factors.neg_().exp_().add_(1)
    products = factors.reshape(*logits.shape[:-1], n // group, group).prod(-1)
    return positive_part + products.log_().sum(-1)


def gaussian(
    net: GaussianMLP, filled: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`GaussianMLP.forward` through :func:`dense`: loc, scale
    ``(batch, z_dim)``."""
    hidden = dense(filled, net.fc1.weight, net.fc1.bias, relu=True)
    hidden = dense(hidden, net.fc2.weight, net.fc2.bias, relu=True)
    out = full_precision(dense(hidden, net.head.weight, net.head.bias, relu=False))
    loc, raw_scale = out.chunk(2, dim=-1)
    return loc, F.softplus(raw_scale) + MIN_SCALE


def prior(cvae: CVAE, xs: torch.Tensor, y_hat: torch.Tensor | None = None) -> Normal:
    """p(z|x) as :meth:`CVAE.prior` computes it, as a Normal over ``(batch, z_dim)``."""
    xs = flatten(xs)
    y_hat = cvae.baseline_guess(xs) if y_hat is None else flatten(y_hat)
    # The networks guarantee scale > 0 (softplus + floor): the argument checks are
    # skipped.
    return Normal(
        *gaussian(cvae.prior_net, fill_hidden(xs, y_hat)), validate_args=False
    )


def posterior(cvae: CVAE, xs: torch.Tensor, ys: torch.Tensor) -> Normal:
    """q(z|x,y) as :meth:`CVAE.posterior` computes it."""
    if cvae.recognition_net is None:
        cvae.posterior(xs, ys)  # raises the error that says there is none
    filled = fill_hidden(flatten(xs), flatten(ys))
    return Normal(*gaussian(cvae.recognition_net, filled), validate_args=False)


def generation_logits(
    net: GenerationNet,
    z: torch.Tensor,
    xs: torch.Tensor,
    pixels: torch.Tensor | None = None,
) -> torch.Tensor:
    """:meth:`GenerationNet.forward`, logits ``(..., batch, 784)``, or
    ``(..., batch, k)`` for the ``pixels`` asked for; p(y|x,z)'s x-half once per image
    without gradients."""
    if not net.sees_input:
        hidden = dense(z, net.fc1.weight, net.fc1.bias, relu=True)
    elif torch.is_grad_enabled():
        joint = torch.cat([z, xs.expand(*z.shape[:-1], xs.shape[-1])], dim=-1)
        hidden = dense(joint, net.fc1.weight, net.fc1.bias, relu=True)
    else:
        weight_z, weight_x = net.fc1.weight.split([z.shape[-1], xs.shape[-1]], dim=1)
        hidden = dense(z, weight_z.contiguous(), None, relu=False)
        hidden = hidden.add_(F.linear(xs, weight_x, net.fc1.bias)).relu_()
    hidden = dense(hidden, net.fc2.weight, net.fc2.bias, relu=True)
    weight, bias = net.fc3.weight, net.fc3.bias
    if pixels is not None:
        weight, bias = weight[pixels], bias[pixels]
    return full_precision(dense(hidden, weight, bias, relu=False))


def log_likelihood(
    cvae: CVAE,
    z: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    pixels: torch.Tensor | None = None,
) -> torch.Tensor:
    """:meth:`CVAE.log_likelihood` ``(..., batch)``; with ``pixels`` (the hidden ones,
    the same in every image) only their logits, and Σ t·l − softplus(l) per
    image."""
    xs, ys = flatten(xs), flatten(ys)
    if pixels is None:
        return -masked_bce(generation_logits(cvae.generation_net, z, xs), ys)
    logits = generation_logits(cvae.generation_net, z, xs, pixels)
    return (ys[:, pixels] * logits).sum(-1) - softplus_sum(logits)


def neg_elbo(
    cvae: CVAE,
    xs: torch.Tensor,
    ys: torch.Tensor,
    y_hat: torch.Tensor | None = None,
    pixels: torch.Tensor | None = None,
    analytic_kl: bool = False,
) -> torch.Tensor:
    """What ``Trace_ELBO`` computes from :meth:`CVAE.model` and :meth:`CVAE.guide`,
    summed over the batch: -[log p(y|x,z) + log p(z|x) - log q(z|x,y)], z ~ q(z|x,y). z
    is drawn as the guide draws it (``rsample``), so the same random state gives the
    same z. ``analytic_kl``: ``TraceMeanField_ELBO``'s -[log p(y|x,z) - KL(q || p)]."""
    q = posterior(cvae, xs, ys)
    z = q.rsample()
    p = prior(cvae, xs, y_hat)
    if analytic_kl:
        kl = kl_divergence(q, p).sum(-1)
    else:
        kl = q.log_prob(z).sum(-1) - p.log_prob(z).sum(-1)
    return -(log_likelihood(cvae, z, xs, ys, pixels) - kl).sum()


def gsnn_loss(
    cvae: CVAE,
    xs: torch.Tensor,
    ys: torch.Tensor,
    y_hat: torch.Tensor | None = None,
    pixels: torch.Tensor | None = None,
) -> torch.Tensor:
    """What ``Trace_ELBO`` computes from :meth:`CVAE.model` and :meth:`CVAE.gsnn_guide`:
    -log p(y|x,z), z ~ p(z|x) reparameterised, summed over the batch."""
    z = prior(cvae, xs, y_hat).rsample()
    return -log_likelihood(cvae, z, xs, ys, pixels).sum()


def training_loss(
    cvae: CVAE, family: Family, alpha: float, analytic_kl: bool = False
) -> Callable[..., torch.Tensor]:
    """``family``'s loss as ``loss(xs, ys, y_hat)``, summed over the batch:
    :func:`neg_elbo` for the CVAE, :func:`gsnn_loss` for the GSNN, and for the hybrid
    alpha * :func:`neg_elbo` + (1 - alpha) * :func:`gsnn_loss`, with z ~ q(z|x,y) drawn
    before z ~ p(z|x), as :class:`~cvae_helpers.families.HybridELBO` draws them (both
    terms, whatever alpha, so that the random draws stay the same)."""

    def loss(xs: torch.Tensor, ys: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        pixels = hidden_pixels(xs)  # a setting hides the same pixels in every image
        if family.weighted:
            return alpha * neg_elbo(cvae, xs, ys, y_hat, pixels, analytic_kl) + (
                1 - alpha
            ) * gsnn_loss(cvae, xs, ys, y_hat, pixels)
        if family.recognition:
            return neg_elbo(cvae, xs, ys, y_hat, pixels, analytic_kl)
        return gsnn_loss(cvae, xs, ys, y_hat, pixels)

    return loss


class TorchOptim:
    """A torch optimizer with ``get_state`` / ``set_state``, as Pyro's optimizers have
    them; with ``lr_decay``, also ``step(val_loss)``, as Pyro's ``ReduceLROnPlateau``
    (:func:`cvae_helpers.training.make_optimizer`) has it."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, lr_decay: float | None = None
    ) -> None:
        self.optimizer = optimizer
        self.scheduler = None
        if lr_decay is not None:
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=lr_decay, patience=0
            )

    def step(self, val_loss: float) -> None:
        self.scheduler.step(val_loss)

    def get_state(self) -> dict:
        if self.scheduler is None:
            return self.optimizer.state_dict()
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def set_state(self, state: dict) -> None:
        if self.scheduler is None:
            self.optimizer.load_state_dict(state)
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def make_adam(params, lr: float) -> torch.optim.Adam:
    """One Adam over all parameters, fused into a single kernel where this torch has
    it."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused Adam for this device
        return torch.optim.Adam(params, lr=lr)


class FastSteps:
    """Shaped like Pyro's ``SVI``: ``step(*batch)`` takes one gradient step and
    ``evaluate_loss(*batch)`` scores a batch without gradients; both return the loss
    summed over the batch as a tensor on its device (one host round-trip per epoch, not
    per step).

    ``autocast``: the dtype of mixed-precision matmuls (``None``: fp32); fp16 gets a
    gradient scaler so that small gradients survive. ``lr_decay``: see
    :class:`TorchOptim`.
    """

    engine = "fast"  # what a training run records for the epochs these steps train

    def __init__(
        self,
        loss: Callable[..., torch.Tensor],
        params,
        lr: float,
        autocast: torch.dtype | None = None,
        lr_decay: float | None = None,
    ) -> None:
        self.loss = loss
        self.optim = TorchOptim(make_adam(params, lr), lr_decay)
        self.autocast = autocast
        self.scaler = torch.amp.GradScaler() if autocast == torch.float16 else None

    def step(self, *batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(
            batch[0].device.type, dtype=self.autocast, enabled=self.autocast is not None
        ):
            loss = self.loss(*batch)
        optimizer = self.optim.optimizer
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        return loss.detach()

    @torch.no_grad()
    def evaluate_loss(self, *batch: torch.Tensor) -> torch.Tensor:
        return self.loss(*batch)


def baseline_steps(net: BaselineNet, spec: RunSpec) -> FastSteps:
    """The baseline's steps: masked BCE, fused Adam, ``spec.precision``."""

    def loss(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return masked_bce(full_precision(net.logits(xs)), ys).sum()

    return FastSteps(
        loss,
        net.parameters(),
        spec.profile.learning_rate,
        autocast_dtype(spec.precision, spec.device),
    )


def cvae_steps(cvae: CVAE, spec: RunSpec) -> FastSteps:
    """The CVAE family's steps: ``spec.family``'s loss over the networks it trains."""
    nets = [cvae.prior_net, cvae.recognition_net, cvae.generation_net]
    params = [p for net in nets if net is not None for p in net.parameters()]
    profile = spec.profile
    return FastSteps(
        training_loss(cvae, spec.family, spec.alpha, profile.analytic_kl),
        params,
        profile.learning_rate,
        autocast_dtype(spec.precision, spec.device),
        profile.lr_decay,
    )


def gaussian_log_ratio(
    z: torch.Tensor, noise: torch.Tensor, prior: Normal, proposal: Normal
) -> torch.Tensor:
    """log p(z|x) - log q(z|x,y) summed over z's dimensions, ``(S, batch)``, for
    z = loc_q + scale_q * noise: the log(2π) terms cancel, (z - loc_q) / scale_q is the
    noise itself, and the log-scales are one number per image."""
    standardized = (z - prior.loc) / prior.scale
    squares = torch.linalg.vecdot(noise, noise) - torch.linalg.vecdot(
        standardized, standardized
    )
    return 0.5 * squares + (proposal.scale.log() - prior.scale.log()).sum(-1)


@torch.no_grad()
def log_weights(
    cvae: CVAE,
    xs: torch.Tensor,
    ys: torch.Tensor,
    num_samples: int,
    proposal: str = "posterior",
) -> torch.Tensor:
    """:func:`cvae_helpers.evaluation.log_weights`, ``(num_samples, batch)``, from the
    same random draws, scored a few samples at a time: a chunk's logits (about 5,000
    rows) stay in the CPU's cache, and its temporaries reuse memory."""
    if proposal not in ("prior", "posterior"):
        raise ValueError(f"proposal must be 'prior' or 'posterior', got {proposal!r}.")
    xs, ys = flatten(xs), flatten(ys)
    p = prior(cvae, xs)
    q = posterior(cvae, xs, ys) if proposal == "posterior" else p
    pixels = hidden_pixels(xs)
    noise = torch.randn(
        (num_samples, *q.loc.shape), dtype=q.loc.dtype, device=q.loc.device
    )
    weights = []
    for part in noise.split(max(1, CHUNK_ROWS // xs.shape[0])):
        z = q.loc + q.scale * part  # q.sample(), bit for bit
        log_weight = log_likelihood(cvae, z, xs, ys, pixels)
        if q is not p:
            log_weight += gaussian_log_ratio(z, part, p, q)
        weights.append(log_weight)
    return torch.cat(weights)
