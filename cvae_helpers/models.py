"""The baseline network, the masked loss and the CVAE (model and guide) in Pyro.

Shapes: images arrive as ``(batch, 28, 28)`` and are flattened to ``(batch, 784)`` inside the
networks. Pixels equal to -1 in an input are the ones to predict; pixels equal to -1 in a target
are the given ones, which the loss ignores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO
from torch import nn

from .config import DEFAULT_ALPHA, check_family
from .data import MASK_VALUE, NUM_PIXELS

# Softplus keeps the encoders' scales positive; this floor keeps log(scale) finite in float32.
MIN_SCALE = 1e-4
# The three ways of training the same networks (config.FAMILIES, Sohn et al., 2015, §3.3-3.4)
# are the CVAE's ELBO, the GSNN's -log p(y|x,z) with z from the prior network, and their
# weighted sum (config.DEFAULT_ALPHA on the first).


def flatten(images: torch.Tensor) -> torch.Tensor:
    """``(batch, 28, 28)`` or ``(batch, 784)`` to ``(batch, 784)``."""
    return images.reshape(images.shape[0], NUM_PIXELS)


def full_precision(values: torch.Tensor) -> torch.Tensor:
    """``values`` in float32 if they are 16-bit floats (a matmul under mixed precision), else as
    they are: the distributions' arithmetic (log-probabilities, softplus) never runs in bf16."""
    return values.float() if values.dtype in (torch.float16, torch.bfloat16) else values


def fill_hidden(inputs: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """``inputs`` with its hidden pixels (-1) replaced by ``fill``; all ``(batch, 784)``."""
    return torch.where(inputs == MASK_VALUE, fill, inputs)


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy summed over the pixels to predict only (``targets != -1``).

    Args:
        logits: ``(..., batch, 784)`` pre-sigmoid outputs; leading sample dimensions broadcast.
        targets: ``(batch, 28, 28)`` or ``(batch, 784)``, with -1 on the given pixels.

    Returns:
        ``(..., batch)``: nats per image, i.e. the negative Bernoulli log-likelihood of the
        hidden pixels. Computed from logits, which is exact where ``log(sigmoid)`` would underflow.
    """
    targets = flatten(targets)
    hidden = targets != MASK_VALUE
    per_pixel = F.binary_cross_entropy_with_logits(
        logits, torch.where(hidden, targets, 0.0).expand_as(logits), reduction="none"
    )
    return (per_pixel * hidden).sum(-1)


def softplus_sum(logits: torch.Tensor) -> torch.Tensor:
    """Σ softplus(l) over the last dimension: ``(..., n)`` logits to ``(...)``.

    With gradients (training) this is ``F.softplus(logits).sum(-1)``. Without them (evaluation:
    100 samples × 200 images × up to 588 hidden pixels per batch) it uses
    softplus(l) = max(l, 0) + log(1 + e^{-|l|}) and multiplies the factors 1 + e^{-|l|}, each in
    (1, 2], in groups of at most 64 before one log per group: a group's product stays below 2^64,
    far from float32's overflow. torch's vectorised exp is several times faster than its softplus
    on this project's CPU, so the sum costs about a third. The two agree to float rounding, at
    most 1e-7 nats per pixel (tests/test_models.py).
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


class BaselineNet(nn.Module):
    """The deterministic baseline: an MLP 784-500-500-784 with ReLU and a sigmoid output."""

    def __init__(self, hidden_1: int = 500, hidden_2: int = 500) -> None:
        super().__init__()
        self.config = {"hidden_1": hidden_1, "hidden_2": hidden_2}
        self.fc1 = nn.Linear(NUM_PIXELS, hidden_1)
        self.fc2 = nn.Linear(hidden_1, hidden_2)
        self.fc3 = nn.Linear(hidden_2, NUM_PIXELS)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(batch, 28, 28)`` inputs to ``(batch, 784)`` pre-sigmoid outputs."""
        hidden = F.relu(self.fc1(flatten(inputs)))
        hidden = F.relu(self.fc2(hidden))
        return self.fc3(hidden)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(batch, 28, 28)`` inputs to ``(batch, 784)`` pixel probabilities."""
        return torch.sigmoid(self.logits(inputs))


def _onednn_linear_available() -> bool:
    try:
        x = torch.ones(2, 3)
        layer = nn.Linear(3, 2)
        return torch.allclose(torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, "relu",
                                                                 [], ""), F.relu(layer(x)))
    except (AttributeError, RuntimeError):
        return False


ONEDNN_LINEAR = _onednn_linear_available()


def dense(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
          relu: bool) -> torch.Tensor:
    """``relu(x @ weight.T + bias)`` (or without the ReLU), ``x`` ``(..., in)``.

    Without gradients on the CPU, in fp32 (evaluation, validation and sampling, with up to 5,000
    samples of z at once), oneDNN's linear with the ReLU fused in runs here about 1.5x faster
    than MKL's matmul and a separate ReLU; everywhere else, training included, this is the plain
    ``F.linear``. The numbers agree to float rounding. Every layer of the CVAE goes through it.
    """
    if (ONEDNN_LINEAR and not torch.is_grad_enabled() and x.device.type == "cpu"
            and x.dtype == weight.dtype == torch.float32):
        flat = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), weight, bias,
                                                  "relu" if relu else "none", [], "")
        return flat.reshape(*x.shape[:-1], weight.shape[0])
    out = F.linear(x, weight, bias)
    return F.relu(out) if relu else out


class GaussianMLP(nn.Module):
    """784-500-500 MLP with a Gaussian head: ``(batch, 784)`` to loc, scale ``(batch, z_dim)``.

    Used both as the prior network p(z|x) and the recognition network q(z|x,y); they differ in
    what fills the hidden pixels of their input (the baseline's guess or the true y).
    """

    def __init__(self, z_dim: int, hidden_1: int, hidden_2: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(NUM_PIXELS, hidden_1)
        self.fc2 = nn.Linear(hidden_1, hidden_2)
        self.head = nn.Linear(hidden_2, 2 * z_dim)

    def forward(self, filled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = dense(filled, self.fc1.weight, self.fc1.bias, relu=True)
        hidden = dense(hidden, self.fc2.weight, self.fc2.bias, relu=True)
        loc, raw_scale = full_precision(dense(hidden, self.head.weight, self.head.bias,
                                              relu=False)).chunk(2, dim=-1)
        # A bare exp(raw_scale) overflows to inf for raw_scale > 88 in float32 and then the KL
        # term is NaN; softplus grows only linearly, and the floor keeps log(scale) finite.
        return loc, F.softplus(raw_scale) + MIN_SCALE


class GenerationNet(nn.Module):
    """p(y|z), or the paper's p(y|x,z) when ``sees_input``: to ``(batch, 784)`` logits.

    ``pixels`` (an index tensor) asks for the logits of those pixels only: the likelihood needs
    the hidden ones alone, and skipping the rest saves up to 3/4 of the last layer's work.
    Without gradients, p(y|x,z)'s first layer applies its x-half once per image, not once per
    sample of z: W [z; x] + b = W_z z + (W_x x + b), which saves 3/5 of the network's work when
    evaluation draws 100 samples per image.
    """

    def __init__(self, z_dim: int, hidden_1: int, hidden_2: int, sees_input: bool) -> None:
        super().__init__()
        self.sees_input = sees_input
        self.fc1 = nn.Linear(z_dim + (NUM_PIXELS if sees_input else 0), hidden_1)
        self.fc2 = nn.Linear(hidden_1, hidden_2)
        self.fc3 = nn.Linear(hidden_2, NUM_PIXELS)

    def forward(self, z: torch.Tensor, inputs: torch.Tensor,
                pixels: torch.Tensor | None = None) -> torch.Tensor:
        """``z`` ``(..., batch, z_dim)`` and ``inputs`` ``(batch, 784)`` to logits
        ``(..., batch, 784)``, or ``(..., batch, len(pixels))`` for the ``pixels`` asked for."""
        if not self.sees_input:
            hidden = dense(z, self.fc1.weight, self.fc1.bias, relu=True)
        elif torch.is_grad_enabled():
            hidden = dense(torch.cat([z, inputs.expand(*z.shape[:-1], NUM_PIXELS)], dim=-1),
                           self.fc1.weight, self.fc1.bias, relu=True)
        else:
            weight_z, weight_x = self.fc1.weight.split([z.shape[-1], NUM_PIXELS], dim=1)
            hidden = dense(z, weight_z.contiguous(), None, relu=False)
            hidden = hidden.add_(F.linear(inputs, weight_x, self.fc1.bias)).relu_()
        hidden = dense(hidden, self.fc2.weight, self.fc2.bias, relu=True)
        if pixels is None:
            return full_precision(dense(hidden, self.fc3.weight, self.fc3.bias, relu=False))
        return full_precision(dense(hidden, self.fc3.weight[pixels], self.fc3.bias[pixels],
                                    relu=False))


@dataclass(frozen=True)
class CVAEConfig:
    """Architecture of a CVAE; stored in its checkpoints."""

    z_dim: int = 200
    hidden_1: int = 500
    hidden_2: int = 500
    decoder_sees_input: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


class CVAE(nn.Module):
    """Conditional VAE of Sohn, Lee & Yan (2015) with a Pyro ``model`` and ``guide``.

    - prior network p(z|x): fed x with its hidden pixels filled by the frozen baseline's guess.
    - recognition network q(z|x,y): fed x with its hidden pixels filled by the true y.
    - generation network p(y|z) (default, as in the Pyro example) or p(y|x,z)
      (``decoder_sees_input=True``, as in the paper): Bernoulli probabilities for all pixels,
      of which only the hidden ones are observed.

    The baseline is a submodule, so a checkpoint carries it, but it is frozen: its parameters
    never reach Pyro's parameter store or the optimizer.
    """

    def __init__(
        self,
        z_dim: int = 200,
        hidden_1: int = 500,
        hidden_2: int = 500,
        baseline: BaselineNet | None = None,
        decoder_sees_input: bool = False,
        recognition: bool = True,
    ) -> None:
        super().__init__()
        self.config = CVAEConfig(z_dim, hidden_1, hidden_2, decoder_sees_input)
        self.baseline = baseline if baseline is not None else BaselineNet(hidden_1, hidden_2)
        self.baseline.requires_grad_(False)
        self.prior_net = GaussianMLP(z_dim, hidden_1, hidden_2)
        # A GSNN (``recognition=False``) has no q(z|x,y): it is trained and tested with p(z|x).
        self.recognition_net = GaussianMLP(z_dim, hidden_1, hidden_2) if recognition else None
        self.generation_net = GenerationNet(z_dim, hidden_1, hidden_2, decoder_sees_input)

    @torch.no_grad()
    def baseline_guess(self, inputs: torch.Tensor) -> torch.Tensor:
        """y_hat ``(batch, 784)``: the frozen baseline's pixel probabilities, no gradient."""
        return self.baseline(inputs)

    def prior(
        self, xs: torch.Tensor, y_hat: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loc and scale ``(batch, z_dim)`` of p(z|x); computes y_hat if not given."""
        xs = flatten(xs)
        y_hat = self.baseline_guess(xs) if y_hat is None else flatten(y_hat)
        return self.prior_net(fill_hidden(xs, y_hat))

    def posterior(self, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loc and scale ``(batch, z_dim)`` of q(z|x,y)."""
        if self.recognition_net is None:
            raise ValueError("This model has no recognition network q(z|x,y) (a GSNN): use its "
                             "prior network, e.g. the Monte Carlo estimator, instead.")
        xs = flatten(xs)
        return self.recognition_net(fill_hidden(xs, flatten(ys)))

    def model(
        self, xs: torch.Tensor, ys: torch.Tensor | None = None, y_hat: torch.Tensor | None = None
    ) -> torch.Tensor:
        """p(z|x) p(y|z) (or p(y|x,z)). ``xs``, ``ys``, ``y_hat``: ``(batch, 28, 28)`` or ``(batch, 784)``.

        Returns the pixel probabilities ``(batch, 784)`` of the sampled completion.
        """
        pyro.module("prior_net", self.prior_net)
        pyro.module("generation_net", self.generation_net)
        xs = flatten(xs)
        with pyro.plate("data", xs.shape[0]):
            loc, scale = self.prior(xs, y_hat)
            z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
            logits = self.generation_net(z, xs)
            probs = torch.sigmoid(logits)
            if ys is None:
                pyro.deterministic("y", probs, event_dim=1)
            else:
                ys = flatten(ys)
                hidden = xs == MASK_VALUE
                # MNIST pixels are grayscale in [0, 1], not {0, 1}: the Bernoulli log-density is
                # still the cross-entropy we want, but its support check would reject them, so
                # validation is off. The given pixels are masked out of the likelihood.
                likelihood = dist.Bernoulli(logits=logits, validate_args=False).mask(hidden)
                pyro.sample("y", likelihood.to_event(1), obs=torch.where(hidden, ys, 0.0))
        return probs

    def guide(
        self, xs: torch.Tensor, ys: torch.Tensor | None = None, y_hat: torch.Tensor | None = None
    ) -> None:
        """q(z|x,y) when ``ys`` is given; without ``ys`` (prediction) it falls back to p(z|x)."""
        xs = flatten(xs)
        with pyro.plate("data", xs.shape[0]):
            if ys is None:
                pyro.module("prior_net", self.prior_net)
                loc, scale = self.prior(xs, y_hat)
            else:
                pyro.module("recognition_net", self.recognition_net)
                loc, scale = self.posterior(xs, ys)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def gsnn_guide(
        self, xs: torch.Tensor, ys: torch.Tensor | None = None, y_hat: torch.Tensor | None = None
    ) -> None:
        """The GSNN's guide: z ~ p(z|x) from the prior network, reparameterised, whatever ``ys``.

        With :meth:`model` it makes ``Trace_ELBO`` compute -[log p(y|x,z) + log p(z|x) - log p(z|x)]
        = -log p(y|x,z) for one z: the GSNN's loss, the objective that is also used at test time.
        """
        pyro.module("prior_net", self.prior_net)
        xs = flatten(xs)
        with pyro.plate("data", xs.shape[0]):
            loc, scale = self.prior(xs, y_hat)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def log_likelihood(self, z: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor,
                       pixels: torch.Tensor | None = None) -> torch.Tensor:
        """log p(y|x,z) ``(..., batch)`` of the hidden pixels, for z ``(..., batch, z_dim)``.

        ``xs``, ``ys``: ``(batch, 784)``. ``pixels``: the hidden pixels when every image of the
        batch hides the same ones (see :func:`~cvae_helpers.data.hidden_pixels`); then only their
        logits are computed, and the Bernoulli log-likelihood is ``t·l − softplus(l)`` per pixel
        (without gradients: Σ t·l − :func:`softplus_sum`). Without ``pixels`` it is
        ``-masked_bce`` over all 784 logits: the same number.
        """
        if pixels is None:
            return -masked_bce(self.generation_net(z, xs), ys)
        logits = self.generation_net(z, xs, pixels)
        if torch.is_grad_enabled():
            return (ys[:, pixels] * logits - F.softplus(logits)).sum(-1)
        return (ys[:, pixels] * logits).sum(-1) - softplus_sum(logits)

    def neg_elbo(self, xs: torch.Tensor, ys: torch.Tensor, y_hat: torch.Tensor | None = None,
                 pixels: torch.Tensor | None = None) -> torch.Tensor:
        """The loss ``Trace_ELBO`` computes from :meth:`model` and :meth:`guide`, without Pyro's
        tracing: -[log p(y|x,z) + log p(z|x) - log q(z|x,y)], z ~ q(z|x,y), summed over the batch.

        z is drawn as the guide draws it (``Normal.rsample``), so the same random state gives the
        same z, and the loss and gradients equal ``Trace_ELBO``'s (tests/test_models.py). It is
        the training loss because it skips the tracing and scores only the hidden pixels.
        """
        xs, ys = flatten(xs), flatten(ys)
        # The networks guarantee scale > 0 (softplus + floor), so the argument checks are skipped.
        posterior = dist.Normal(*self.posterior(xs, ys), validate_args=False)
        z = posterior.rsample()
        prior = dist.Normal(*self.prior(xs, y_hat), validate_args=False)
        log_weight = (self.log_likelihood(z, xs, ys, pixels) + prior.log_prob(z).sum(-1)
                      - posterior.log_prob(z).sum(-1))
        return -log_weight.sum()

    def gsnn_loss(self, xs: torch.Tensor, ys: torch.Tensor, y_hat: torch.Tensor | None = None,
                  pixels: torch.Tensor | None = None) -> torch.Tensor:
        """The loss ``Trace_ELBO`` computes from :meth:`model` and :meth:`gsnn_guide`, without
        tracing: -log p(y|x,z), z ~ p(z|x) reparameterised, summed over the batch (L_GSNN)."""
        xs, ys = flatten(xs), flatten(ys)
        z = dist.Normal(*self.prior(xs, y_hat), validate_args=False).rsample()
        return -self.log_likelihood(z, xs, ys, pixels).sum()

    def hybrid_loss(self, xs: torch.Tensor, ys: torch.Tensor, y_hat: torch.Tensor | None = None,
                    pixels: torch.Tensor | None = None,
                    alpha: float = DEFAULT_ALPHA) -> torch.Tensor:
        """alpha * L_CVAE + (1 - alpha) * L_GSNN on one batch, summed: z from q(z|x,y) for the
        first term, then another z from p(z|x) for the second (the order :func:`pyro_loss` draws
        them in). The two terms share the prior and generation networks."""
        return (alpha * self.neg_elbo(xs, ys, y_hat, pixels)
                + (1 - alpha) * self.gsnn_loss(xs, ys, y_hat, pixels))

    def training_loss(self, family: str, alpha: float = DEFAULT_ALPHA):
        """The hand-written loss of ``family`` as ``loss(xs, ys, y_hat, pixels)``, summed over the
        batch; :func:`pyro_loss` computes the same from the model and guides."""
        check_family(family)
        if family == "cvae":
            return self.neg_elbo
        if family == "gsnn":
            return self.gsnn_loss
        return lambda xs, ys, y_hat=None, pixels=None: self.hybrid_loss(xs, ys, y_hat, pixels,
                                                                       alpha)

    def latent_noise(self, num_samples: int, batch: int,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard-normal draws ``(num_samples, batch, z_dim)`` on this model's device.

        Drawn on the CPU, then moved: the same generator seed gives the same noise on any
        device, and a private ``generator`` leaves the global random state alone.
        """
        device = next(self.parameters()).device
        return torch.randn(num_samples, batch, self.config.z_dim, generator=generator).to(device)

    @torch.no_grad()
    def sample(
        self,
        xs: torch.Tensor,
        num_samples: int = 1,
        y_hat: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Completions from p(y|x): ``(num_samples, batch, 784)`` pixel probabilities.

        z is drawn from the prior network, as at test time; the pixels shown are the Bernoulli
        means, the usual way to display MNIST samples. ``noise`` ``(num_samples, batch, z_dim)``
        fixes the standard-normal draws (z = loc + scale * noise) instead of sampling them.
        """
        xs = flatten(xs)
        loc, scale = self.prior(xs, y_hat)
        if noise is None:
            z = dist.Normal(loc, scale).sample((num_samples,))
        else:
            z = loc + scale * noise
        return torch.sigmoid(self.generation_net(z, xs))


def pyro_loss(cvae: CVAE, family: str, xs: torch.Tensor, ys: torch.Tensor,
              y_hat: torch.Tensor | None = None, alpha: float = DEFAULT_ALPHA) -> torch.Tensor:
    """The family's loss in Pyro's idiom, differentiable, summed over the batch.

    - ``"cvae"``: ``Trace_ELBO`` of :meth:`CVAE.model` with :meth:`CVAE.guide`, z ~ q(z|x,y).
    - ``"gsnn"``: ``Trace_ELBO`` of the same model with :meth:`CVAE.gsnn_guide`, z ~ p(z|x).
    - ``"hybrid"``: the two ELBO losses added with weights ``alpha`` and ``1 - alpha``.
    """
    check_family(family)
    elbo = Trace_ELBO()
    if family == "cvae":
        return elbo.differentiable_loss(cvae.model, cvae.guide, xs, ys, y_hat)
    if family == "gsnn":
        return elbo.differentiable_loss(cvae.model, cvae.gsnn_guide, xs, ys, y_hat)
    return (alpha * elbo.differentiable_loss(cvae.model, cvae.guide, xs, ys, y_hat)
            + (1 - alpha) * elbo.differentiable_loss(cvae.model, cvae.gsnn_guide, xs, ys, y_hat))
