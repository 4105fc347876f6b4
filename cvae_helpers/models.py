"""The networks of the book: the baseline MLP, its masked loss, and the CVAE in Pyro.

Images arrive as ``(batch, 28, 28)`` and are flattened to ``(batch, 784)`` inside the
networks. Pixels equal to -1 in an input are the ones to predict; pixels equal to -1 in
a target are the given ones, which the loss ignores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .data import MASK_VALUE, NUM_PIXELS

# Softplus keeps the encoders' scales positive; this floor keeps log(scale) finite.
MIN_SCALE = 1e-4


def flatten(images: torch.Tensor) -> torch.Tensor:
    """``(batch, 28, 28)`` or ``(batch, 784)`` to ``(batch, 784)``."""
    return images.reshape(images.shape[0], NUM_PIXELS)


def fill_hidden(inputs: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """``inputs`` with its hidden pixels (-1) replaced by ``fill``; all
    ``(batch, 784)``."""
    return torch.where(inputs == MASK_VALUE, fill, inputs)


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy summed over the pixels to predict
    (``targets != -1``): ``logits`` ``(..., batch, 784)`` (leading sample
    dimensions broadcast), ``targets`` ``(batch, 28, 28)`` or ``(batch, 784)``.
    Returns ``(..., batch)``: nats per image.
    """
    targets = flatten(targets)
    hidden = targets != MASK_VALUE
    truth = torch.where(hidden, targets, 0.0).expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, truth, reduction="none")
    return (bce * hidden).sum(-1)


class BaselineNet(nn.Module):
    """The deterministic baseline: an MLP 784-500-500-784 with ReLU and a
    sigmoid output."""

    def __init__(self, hidden_1: int = 500, hidden_2: int = 500) -> None:
        super().__init__()
        self.config = {"hidden_1": hidden_1, "hidden_2": hidden_2}
        self.fc1 = nn.Linear(NUM_PIXELS, hidden_1)
        self.fc2 = nn.Linear(hidden_1, hidden_2)
        self.fc3 = nn.Linear(hidden_2, NUM_PIXELS)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(batch, 28, 28)`` inputs to ``(batch, 784)`` logits."""
        hidden = F.relu(self.fc1(flatten(inputs)))
        hidden = F.relu(self.fc2(hidden))
        return self.fc3(hidden).to(self.fc3.weight.dtype)  # as in GaussianMLP

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(batch, 28, 28)`` inputs to ``(batch, 784)`` probabilities."""
        return torch.sigmoid(self.logits(inputs))


class GaussianMLP(nn.Module):
    """784-500-500 MLP with a Gaussian head: ``(batch, 784)`` to loc, scale
    ``(batch, z_dim)``. The prior network p(z|x) and the recognition network
    q(z|x,y) differ in what fills the hidden pixels of their input."""

    def __init__(self, z_dim: int, hidden_1: int, hidden_2: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(NUM_PIXELS, hidden_1)
        self.fc2 = nn.Linear(hidden_1, hidden_2)
        self.head = nn.Linear(hidden_2, 2 * z_dim)

    def forward(
        self,
        filled: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = F.relu(self.fc1(filled))
        hidden = F.relu(self.fc2(hidden))
        # Under bf16 autocast the matmuls run in bf16; the distributions'
        # arithmetic stays in the weights' precision (a no-op without autocast).
        out = self.head(hidden).to(self.head.weight.dtype)
        loc, raw_scale = out.chunk(2, dim=-1)
        # exp(raw_scale) would overflow to inf for raw_scale > 88 in float32,
        # and the KL term would be NaN; softplus grows only linearly, and the
        # floor keeps log(scale) finite.
        return loc, F.softplus(raw_scale) + MIN_SCALE


class GenerationNet(nn.Module):
    """p(y|z), or the paper's p(y|x,z) when ``sees_input``: to
    ``(..., batch, 784)`` logits."""

    def __init__(
        self, z_dim: int, hidden_1: int, hidden_2: int, sees_input: bool
    ) -> None:
        super().__init__()
        self.sees_input = sees_input
        in_features = z_dim + (NUM_PIXELS if sees_input else 0)
        self.fc1 = nn.Linear(in_features, hidden_1)
        self.fc2 = nn.Linear(hidden_1, hidden_2)
        self.fc3 = nn.Linear(hidden_2, NUM_PIXELS)

    def forward(self, z: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """``z`` ``(..., batch, z_dim)`` and ``inputs`` ``(batch, 784)`` to
        logits."""
        if self.sees_input:
            z = torch.cat([z, inputs.expand(*z.shape[:-1], NUM_PIXELS)], dim=-1)
        hidden = F.relu(self.fc1(z))
        hidden = F.relu(self.fc2(hidden))
        return self.fc3(hidden).to(self.fc3.weight.dtype)  # as in GaussianMLP


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
    The generation network is p(y|z) (the Pyro example's) or, with
    ``decoder_sees_input``, the paper's p(y|x,z); a GSNN (``recognition=False``) has
    no q(z|x,y)."""

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
        # frozen: a checkpoint carries it, Pyro never sees its parameters
        self.baseline = baseline or BaselineNet(hidden_1, hidden_2)
        self.baseline.requires_grad_(False)
        sizes = (z_dim, hidden_1, hidden_2)
        self.prior_net = GaussianMLP(*sizes)
        self.recognition_net = GaussianMLP(*sizes) if recognition else None
        self.generation_net = GenerationNet(*sizes, decoder_sees_input)

    @torch.no_grad()
    def baseline_guess(self, xs: torch.Tensor) -> torch.Tensor:
        """y_hat ``(batch, 784)``: the frozen baseline's pixel probabilities."""
        return self.baseline(xs)

    def prior(self, xs, y_hat=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Loc and scale ``(batch, z_dim)`` of p(z|x); computes y_hat if not
        given."""
        xs = flatten(xs)
        y_hat = self.baseline_guess(xs) if y_hat is None else flatten(y_hat)
        return self.prior_net(fill_hidden(xs, y_hat))

    def posterior(self, xs, ys) -> tuple[torch.Tensor, torch.Tensor]:
        """Loc and scale ``(batch, z_dim)`` of q(z|x,y)."""
        if self.recognition_net is None:
            raise ValueError(
                "This model has no recognition network q(z|x,y) (a GSNN): use "
                "its prior network, e.g. the Monte Carlo estimator, instead."
            )
        return self.recognition_net(fill_hidden(flatten(xs), flatten(ys)))

    def model(self, xs, ys=None, y_hat=None) -> torch.Tensor:
        """p(z|x) p(y|z) (or p(y|x,z)); ``xs``, ``ys``, ``y_hat``:
        ``(batch, 784)``. Returns the pixel probabilities ``(batch, 784)`` of
        the sampled completion."""
        pyro.module("prior_net", self.prior_net)
        pyro.module("generation_net", self.generation_net)
        xs = flatten(xs)
        with pyro.plate("data", xs.shape[0]):
            z = pyro.sample("z", dist.Normal(*self.prior(xs, y_hat)).to_event(1))
            logits = self.generation_net(z, xs)
            if ys is None:
                return pyro.deterministic("y", torch.sigmoid(logits), event_dim=1)
            hidden = xs == MASK_VALUE
            # Grey pixels in [0, 1] are fine for the Bernoulli log-density, but
            # not for its support check. The given pixels are masked out of the
            # likelihood.
            bernoulli = dist.Bernoulli(logits=logits, validate_args=False)
            likelihood = bernoulli.mask(hidden).to_event(1)
            pyro.sample("y", likelihood, obs=torch.where(hidden, flatten(ys), 0.0))
            return torch.sigmoid(logits)

    def guide(self, xs, ys=None, y_hat=None) -> None:
        """q(z|x,y); without ``ys`` (prediction) it falls back to p(z|x)."""
        if ys is None:
            return self.gsnn_guide(xs, ys, y_hat)
        pyro.module("recognition_net", self.recognition_net)
        with pyro.plate("data", xs.shape[0]):
            pyro.sample("z", dist.Normal(*self.posterior(xs, ys)).to_event(1))

    def gsnn_guide(self, xs, ys=None, y_hat=None) -> None:
        """z ~ p(z|x), whatever ``ys``: with :meth:`model`, the ELBO is log
        p(y|x,z) for one z (the prior terms cancel), the GSNN's objective."""
        pyro.module("prior_net", self.prior_net)
        with pyro.plate("data", xs.shape[0]):
            pyro.sample("z", dist.Normal(*self.prior(xs, y_hat)).to_event(1))

    def log_likelihood(self, z, xs, ys) -> torch.Tensor:
        """log p(y|x,z) ``(..., batch)`` of the hidden pixels, z
        ``(..., batch, z_dim)``."""
        return -masked_bce(self.generation_net(z, flatten(xs)), ys)

    def latent_noise(
        self, num_samples: int, batch: int, generator=None
    ) -> torch.Tensor:
        """Standard-normal draws ``(num_samples, batch, z_dim)`` on this model's device,
        drawn on the CPU: a generator's seed gives the same noise on any device."""
        shape = (num_samples, batch, self.config.z_dim)
        return torch.randn(shape, generator=generator).to(
            self.baseline.fc1.weight.device
        )

    @torch.no_grad()
    def sample(self, xs, num_samples: int = 1, y_hat=None, noise=None) -> torch.Tensor:
        """Completions ``(num_samples, batch, 784)``: Bernoulli means, z from p(z|x).
        ``noise`` ``(num_samples, batch, z_dim)`` fixes z = loc + scale * noise."""
        xs = flatten(xs)
        loc, scale = self.prior(xs, y_hat)
        if noise is None:
            z = dist.Normal(loc, scale).sample((num_samples,))
        else:
            z = loc + scale * noise
        return torch.sigmoid(self.generation_net(z, xs))
