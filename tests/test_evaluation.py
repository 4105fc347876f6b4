"""The estimators against numbers they must match: exact quadrature, Jensen's bound,
Pyro's ELBO."""

from __future__ import annotations

import math

import pytest
import torch
from pyro.distributions import Normal
from pyro.infer import Trace_ELBO

from cvae_helpers.config import set_seed
from cvae_helpers.data import mask_quadrants
from cvae_helpers.evaluation import (
    Estimate,
    cvae_neg_elbo,
    cvae_nll_is,
    cvae_nll_mc,
    evaluate,
    log_mean_exp,
    log_weights,
    most_diverse,
)
from cvae_helpers.models import CVAE, BaselineNet, flatten, masked_bce


@pytest.fixture
def tiny_cvae():
    """A CVAE with a one-dimensional z, in float64, whose p(y|x) quadrature computes
    exactly."""
    set_seed(0)
    cvae = (
        CVAE(z_dim=1, hidden_1=16, hidden_2=16, baseline=BaselineNet(16, 16))
        .double()
        .eval()
    )
    xs, ys = mask_quadrants(torch.rand(4, 28, 28, dtype=torch.float64) ** 3, 3)
    return cvae, xs, ys


def exact_nll(cvae, xs, ys, points=4001, width=12.0):
    """-log ∫ p(y|x,z) p(z|x) dz by the trapezoidal rule on loc ± width·scale (z is
    1-D)."""
    with torch.no_grad():
        loc, scale = cvae.prior(xs)
        grid = torch.linspace(-width, width, points, dtype=torch.float64)
        z = loc.T + scale.T * grid[:, None]  # (points, batch)
        log_lik = -masked_bce(cvae.generation_net(z[..., None], flatten(xs)), ys)
        log_prior = torch.distributions.Normal(loc.T, scale.T).log_prob(z)
        log_weights = torch.log(
            torch.full((points,), grid[1] - grid[0], dtype=torch.float64)
        )
        log_weights[[0, -1]] -= math.log(2)
        log_integrand = log_lik + log_prior + log_weights[:, None] + torch.log(scale.T)
        return -torch.logsumexp(log_integrand, dim=0)


def test_mc_and_is_agree_with_quadrature(tiny_cvae):
    cvae, xs, ys = tiny_cvae
    exact = exact_nll(cvae, xs, ys)
    set_seed(1)
    mc = cvae_nll_mc(cvae, xs, ys, num_samples=10_000)
    is_ = cvae_nll_is(cvae, xs, ys, num_samples=10_000)
    # stated tolerance: 0.02 nats per image, far below the differences the book
    # discusses
    assert torch.allclose(mc, exact, atol=0.02), (mc, exact)
    assert torch.allclose(is_, exact, atol=0.02), (is_, exact)
    # and the negative ELBO is a strict upper bound on the exact value
    assert (cvae_neg_elbo(cvae, xs, ys, num_samples=10_000) > exact).all()


def test_is_is_below_the_negative_elbo_on_average():
    set_seed(0)
    cvae = CVAE(z_dim=8, hidden_1=32, hidden_2=32, baseline=BaselineNet(32, 32)).eval()
    xs, ys = mask_quadrants(torch.rand(64, 28, 28) ** 3, 2)
    set_seed(2)
    nll_is = cvae_nll_is(cvae, xs, ys, num_samples=50)
    set_seed(
        3
    )  # independent samples: the bound must hold on average, not by construction
    neg_elbo = cvae_neg_elbo(cvae, xs, ys, num_samples=50)
    assert nll_is.mean() <= neg_elbo.mean()


def test_is_with_one_sample_is_the_single_sample_elbo(tiny_cvae):
    cvae, xs, ys = tiny_cvae
    set_seed(4)
    one = cvae_nll_is(cvae, xs, ys, num_samples=1)
    set_seed(4)
    assert torch.allclose(one, cvae_neg_elbo(cvae, xs, ys, num_samples=1))
    # unbiased: its average over many independent draws is the ELBO (draws batched as
    # copies)
    copies = 4000
    set_seed(5)
    draws = cvae_nll_is(
        cvae, xs.repeat(copies, 1, 1), ys.repeat(copies, 1, 1), num_samples=1
    )
    draws = draws.reshape(copies, -1)
    reference = cvae_neg_elbo(
        cvae, xs.repeat(20, 1, 1), ys.repeat(20, 1, 1), num_samples=1000
    )
    reference = reference.reshape(20, -1)
    stderr = (draws.var(0) / copies + reference.var(0) / 20).sqrt()
    assert ((draws.mean(0) - reference.mean(0)).abs() < 4 * stderr).all()


def test_neg_elbo_matches_pyro_trace_elbo(tiny_cvae):
    cvae, xs, ys = tiny_cvae
    set_seed(6)
    ours = cvae_neg_elbo(cvae, xs, ys, num_samples=10_000).sum().item()
    elbo = Trace_ELBO(
        num_particles=10_000, vectorize_particles=True, max_plate_nesting=1
    )
    with torch.no_grad():
        pyros = elbo.loss(cvae.model, cvae.guide, xs, ys)
    assert ours == pytest.approx(pyros, abs=0.05)


def test_log_weights_score_what_the_proposal_samples_by_log_prob():
    """z ~ q(z|x,y): log p(y|x,z) + log p(z|x) - log q(z|x,y); z ~ p(z|x): log
    p(y|x,z)."""
    set_seed(0)
    cvae = CVAE(z_dim=8, hidden_1=32, hidden_2=32, baseline=BaselineNet(32, 32)).eval()
    xs, ys = mask_quadrants(torch.rand(5, 28, 28) ** 3, 1)
    xs, ys = flatten(xs), flatten(ys)
    with torch.no_grad():
        prior, posterior = Normal(*cvae.prior(xs)), Normal(*cvae.posterior(xs, ys))
        set_seed(1)
        z = posterior.sample((30,))
        expected = (
            cvae.log_likelihood(z, xs, ys)
            + prior.log_prob(z).sum(-1)
            - posterior.log_prob(z).sum(-1)
        )
        set_seed(1)
        weights = log_weights(cvae, xs, ys, 30)
        set_seed(2)
        z_prior = prior.sample((30,))
        set_seed(2)
        prior_weights = log_weights(cvae, xs, ys, 30, "prior")
    assert weights.shape == prior_weights.shape == (30, 5)
    assert torch.allclose(weights, expected, rtol=1e-6, atol=1e-4)
    assert torch.allclose(
        prior_weights, cvae.log_likelihood(z_prior, xs, ys), rtol=1e-6, atol=1e-4
    )
    assert not weights.requires_grad
    with pytest.raises(ValueError, match="proposal must be 'prior' or 'posterior'"):
        log_weights(cvae, xs, ys, 3, "likelihood")


def test_log_mean_exp_is_exact_and_does_not_underflow():
    values = torch.tensor([[math.log(1.0)], [math.log(3.0)]])
    assert torch.allclose(log_mean_exp(values), torch.tensor([math.log(2.0)]))
    # log-likelihoods of hundreds of nats: exp underflows to 0, the log-mean-exp does
    # not
    deep = torch.tensor([[-1000.0, -800.0], [-1000.0, -802.0]], dtype=torch.float64)
    expected = torch.tensor(
        [-1000.0, -800.0 + math.log((1 + math.exp(-2.0)) / 2)], dtype=torch.float64
    )
    assert torch.allclose(log_mean_exp(deep), expected)


def test_evaluate_reports_all_estimators_with_stderr():
    set_seed(0)
    baseline = BaselineNet(16, 16)
    cvae = CVAE(z_dim=4, hidden_1=16, hidden_2=16, baseline=baseline).eval()
    from cvae_helpers.data import MaskedSplit

    xs, ys = mask_quadrants(torch.rand(30, 28, 28), 1)
    result = evaluate(
        baseline,
        cvae,
        MaskedSplit(xs, ys, torch.zeros(30)),
        num_samples=5,
        batch_size=7,
    )
    assert set(result) == {"baseline_nll", "mc", "is", "neg_elbo"}
    assert result["is"].mean <= result["neg_elbo"].mean
    expected = masked_bce(baseline.logits(xs), ys)
    assert result["baseline_nll"].mean == pytest.approx(
        expected.mean().item(), rel=1e-5
    )
    assert result["baseline_nll"].stderr == pytest.approx(
        expected.std().item() / math.sqrt(30), rel=1e-4
    )


def test_estimate_formatting():
    estimate = Estimate.of(torch.tensor([1.0, 2.0, 3.0]))
    assert estimate.mean == 2.0 and str(estimate) == "2.00 ± 0.58"


def test_most_diverse_finds_the_inputs_whose_samples_disagree():
    """Hand-built: every output pixel is sigmoid(3 z_1), and the prior's scale of z_1
    grows with one given pixel of the input. The inputs with the brightest such pixel
    have the most spread-out samples, so the ranking is known in advance."""
    cvae = CVAE(z_dim=2, hidden_1=4, hidden_2=4).eval()
    given_pixel = (
        14 * 28
    )  # row 14, column 0: in the bottom-left quadrant, given in every setting
    with torch.no_grad():
        for layer in (
            cvae.prior_net.fc1,
            cvae.prior_net.fc2,
            cvae.prior_net.head,
            cvae.generation_net.fc1,
            cvae.generation_net.fc2,
            cvae.generation_net.fc3,
        ):
            layer.weight.zero_()
            layer.bias.zero_()
        cvae.prior_net.fc1.weight[0, given_pixel] = (
            1.0  # hidden unit 0 = that pixel's value
        )
        cvae.prior_net.fc2.weight[0, 0] = 1.0
        cvae.prior_net.head.weight[2, 0] = 5.0  # raw scale of z_1 = 5 · pixel - 8
        cvae.prior_net.head.bias[2] = -8.0
        cvae.generation_net.fc1.weight[0, 0] = 1.0  # relu(z_1) and relu(-z_1) ...
        cvae.generation_net.fc1.weight[1, 0] = -1.0
        cvae.generation_net.fc2.weight[0, 0] = 1.0
        cvae.generation_net.fc2.weight[1, 1] = 1.0
        cvae.generation_net.fc3.weight[:, 0] = (
            3.0  # ... give the logit 3 z_1 on every pixel
        )
        cvae.generation_net.fc3.weight[:, 1] = -3.0
    inputs, _ = mask_quadrants(torch.zeros(6, 28, 28), 1)
    inputs[:, 14, 0] = torch.tensor([0.0, 0.9, 0.1, 0.0, 0.6, 0.3])
    chosen = most_diverse(
        cvae, inputs, k=3, num_samples=64, generator=torch.Generator().manual_seed(0)
    )
    assert chosen.tolist() == [1, 4, 5]  # the three brightest, sorted by index
    assert most_diverse(
        cvae, inputs, k=1, generator=torch.Generator().manual_seed(1)
    ).tolist() == [1]
