"""Estimators of the negative conditional log-likelihood -log p(y|x), in nats per image.

For the CVAE, p(y|x) = ∫ p(y|x,z) p(z|x) dz has no closed form. With S samples:

- Monte Carlo (MC):  -log (1/S) Σ_s p(y|x,z_s),                    z_s ~ p(z|x)
- importance sampling (IS): -log (1/S) Σ_s p(y|x,z_s) p(z_s|x) / q(z_s|x,y),  z_s ~
  q(z|x,y)
- negative ELBO: -(1/S) Σ_s log [p(y|x,z_s) p(z_s|x) / q(z_s|x,y)],   z_s ~ q(z|x,y)

MC and IS are consistent (they converge to -log p(y|x) as S grows, from above in
expectation); the negative ELBO is an upper bound that does not tighten with S. All sums
over samples use logsumexp, so nothing underflows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from pyro.distributions import Normal

from .data import EVAL_BATCH_SIZE, MASK_VALUE, MaskedSplit, batched
from .models import CVAE, BaselineNet, flatten, masked_bce


@dataclass
class Estimate:
    """Mean and standard error over images of a per-image estimate."""

    mean: float
    stderr: float

    @classmethod
    def of(cls, values: torch.Tensor) -> Estimate:
        values = values.double()
        n = values.numel()
        stderr = (
            values.std(unbiased=True).item() / math.sqrt(n) if n > 1 else float("nan")
        )
        return cls(values.mean().item(), stderr)

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.stderr:.2f}"


def baseline_nll(
    baseline: BaselineNet,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int = EVAL_BATCH_SIZE,
) -> torch.Tensor:
    """Per-image NLL ``(N,)`` of the baseline (its masked BCE) on inputs and targets
    ``(N, 28, 28)``, in batches, without gradients."""

    def nll(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return masked_bce(baseline.logits(x), y)

    return batched(nll, inputs, targets, batch_size=batch_size)


def log_mean_exp(log_values: torch.Tensor) -> torch.Tensor:
    """log (1/S) Σ_s exp(v_s) over the first dimension, without underflow."""
    return torch.logsumexp(log_values, dim=0) - math.log(log_values.shape[0])


# Samples × images scored at once: a chunk's logits (2,000 × 784 floats) stay in the
# CPU's cache, where scoring all of them at once would stream them through memory.
CHUNK_ROWS = 2000


@torch.no_grad()
def log_weights(
    cvae: CVAE,
    xs: torch.Tensor,
    ys: torch.Tensor,
    num_samples: int,
    proposal: str = "posterior",
) -> torch.Tensor:
    """Log importance weights ``(num_samples, batch)``; ``xs``, ``ys``:
    ``(batch, 784)``.

    - ``"posterior"``: z_s ~ q(z|x,y), and the weight is
      log p(y|x,z_s) + log p(z_s|x) - log q(z_s|x,y).
    - ``"prior"``: z_s ~ p(z|x), and the prior terms cancel: log p(y|x,z_s).
    """
    if proposal not in ("prior", "posterior"):
        raise ValueError(
            f"proposal must be 'prior' or 'posterior', got {proposal!r}.",
        )
    prior = Normal(*cvae.prior(xs))
    proposed = prior if proposal == "prior" else Normal(*cvae.posterior(xs, ys))
    z = proposed.sample((num_samples,))
    weights = []
    for part in z.split(max(1, CHUNK_ROWS // xs.shape[0])):
        log_weight = cvae.log_likelihood(part, xs, ys)
        if proposal == "posterior":
            log_prior = prior.log_prob(part).sum(-1)
            log_weight += log_prior - proposed.log_prob(part).sum(-1)
        weights.append(log_weight)
    return torch.cat(weights)


def cvae_nll_mc(
    cvae: CVAE, inputs: torch.Tensor, targets: torch.Tensor, num_samples: int = 100
) -> torch.Tensor:
    """Monte Carlo estimate ``(batch,)`` of -log p(y|x) with z_s ~ p(z|x)."""
    return -log_mean_exp(log_weights(cvae, inputs, targets, num_samples, "prior"))


def cvae_nll_is(
    cvae: CVAE, inputs: torch.Tensor, targets: torch.Tensor, num_samples: int = 100
) -> torch.Tensor:
    """Importance-sampling estimate ``(batch,)`` of -log p(y|x) with z_s ~ q(z|x,y)."""
    return -log_mean_exp(log_weights(cvae, inputs, targets, num_samples, "posterior"))


def cvae_neg_elbo(
    cvae: CVAE, inputs: torch.Tensor, targets: torch.Tensor, num_samples: int = 100
) -> torch.Tensor:
    """Negative ELBO ``(batch,)``, averaged over ``num_samples`` draws from q(z|x,y)."""
    return -log_weights(cvae, inputs, targets, num_samples, "posterior").mean(0)


# Monte Carlo, importance sampling, -ELBO.
ESTIMATORS = ("mc", "is", "neg_elbo")


@torch.no_grad()
def evaluate(
    baseline: BaselineNet,
    cvae: CVAE,
    split: MaskedSplit,
    num_samples: int = 100,
    batch_size: int = EVAL_BATCH_SIZE,
) -> dict[str, Estimate]:
    """All four estimators over ``split``, each as mean ± standard error over
    its images: ``"baseline_nll"``, and the CVAE's ``"mc"``, ``"is"``,
    ``"neg_elbo"`` (:func:`estimates_against_samples` at one S). A GSNN gets
    the baseline's NLL and MC only. Always in fp32."""
    split = split.to(next(cvae.parameters()).device)
    estimators = ESTIMATORS if cvae.recognition_net is not None else ("mc",)
    values = estimates_against_samples(
        cvae, split, [num_samples], estimators, batch_size
    )
    nll = baseline_nll(baseline, split.inputs, split.targets, batch_size).cpu()
    estimates = {"baseline_nll": nll}
    estimates.update({name: values[name][0] for name in estimators})
    return {name: Estimate.of(nll) for name, nll in estimates.items()}


@torch.no_grad()
def estimates_against_samples(
    cvae: CVAE,
    split: MaskedSplit,
    sample_sizes: Sequence[int],
    estimators: Sequence[str] = ESTIMATORS,
    batch_size: int = EVAL_BATCH_SIZE,
) -> dict[str, torch.Tensor]:
    """Per-image estimates ``(len(sample_sizes), N)``, per estimator and S.

    One set of max(S) draws per image and proposal; the estimate at S uses the
    first S of them (its points are correlated along S). ``estimators``: any of
    ``"mc"`` (z ~ p(z|x)), ``"is"`` and ``"neg_elbo"`` (z ~ q(z|x,y), shared).
    """
    unknown = set(estimators) - set(ESTIMATORS)
    if unknown:
        raise ValueError(
            f"Unknown estimators {sorted(unknown)}; use mc, is or neg_elbo."
        )
    split = split.to(next(cvae.parameters()).device)
    most = max(sample_sizes)

    def per_batch(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        xs, ys = flatten(inputs), flatten(targets)
        weights = {}
        if "is" in estimators or "neg_elbo" in estimators:
            weights["is"] = log_weights(cvae, xs, ys, most, "posterior")
        if "mc" in estimators:
            weights["mc"] = log_weights(cvae, xs, ys, most, "prior")
        rows = []
        for name in estimators:
            source = weights["mc" if name == "mc" else "is"]
            for size in sample_sizes:
                part = source[:size]
                rows.append(
                    -part.mean(0) if name == "neg_elbo" else -log_mean_exp(part)
                )
        return torch.stack(rows, dim=1)  # (batch, estimators × sizes)

    values = batched(
        per_batch, split.inputs, split.targets, batch_size=batch_size
    ).cpu()
    values = values.T.reshape(len(estimators), len(sample_sizes), -1)
    return {name: values[i] for i, name in enumerate(estimators)}


@torch.no_grad()
def most_diverse(
    cvae: CVAE,
    inputs: torch.Tensor,
    k: int,
    num_samples: int = 16,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Indices (ascending, on the CPU) of the ``k`` inputs ``(n, 28, 28)`` whose
    completions disagree the most: the per-pixel variance of ``num_samples``
    Bernoulli means, averaged over the hidden pixels."""
    flat = flatten(inputs)
    hidden = flat == MASK_VALUE
    probs = cvae.sample(
        flat, noise=cvae.latent_noise(num_samples, len(flat), generator)
    )
    spread = (probs.var(0) * hidden).sum(-1) / hidden.sum(-1)
    return spread.topk(k).indices.sort().values.cpu()
