from __future__ import annotations

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO

from cvae_helpers.config import set_seed
from cvae_helpers.data import mask_quadrants
from cvae_helpers.models import CVAE, MIN_SCALE, BaselineNet, masked_bce


def test_masked_bce_matches_a_hand_computation():
    targets = torch.full((2, 784), -1.0)
    targets[0, [0, 5]] = torch.tensor([1.0, 0.25])
    targets[1, 7] = 0.0
    logits = torch.zeros(2, 784)
    logits[0, 0], logits[0, 5], logits[1, 7] = 2.0, -1.0, 0.5
    logits[0, 1] = 50.0  # a given pixel: must not count, however wrong

    def bce(t, z):
        p = 1 / (1 + math.exp(-z))
        return -(t * math.log(p) + (1 - t) * math.log(1 - p))

    expected = torch.tensor([bce(1.0, 2.0) + bce(0.25, -1.0), bce(0.0, 0.5)])
    assert torch.allclose(masked_bce(logits, targets), expected, atol=1e-6)
    # accepts (batch, 28, 28) targets and leading sample dimensions
    stacked = masked_bce(logits.expand(3, 2, 784), targets.reshape(2, 28, 28))
    assert stacked.shape == (3, 2) and torch.allclose(stacked[2], expected, atol=1e-6)


def test_baseline_shapes_and_range():
    net = BaselineNet()
    assert [m.out_features for m in (net.fc1, net.fc2, net.fc3)] == [500, 500, 784]
    probs = net(torch.rand(4, 28, 28))
    assert probs.shape == (4, 784) and ((probs > 0) & (probs < 1)).all()


def _batch(q=2, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return mask_quadrants(torch.rand(n, 28, 28, generator=g), q)


@pytest.mark.parametrize("sees_input", [False, True])
def test_model_and_guide_sites(sees_input):
    cvae = CVAE(z_dim=5, hidden_1=16, hidden_2=12, decoder_sees_input=sees_input)
    xs, ys = _batch()
    guide_trace = poutine.trace(cvae.guide).get_trace(xs, ys)
    model_trace = poutine.trace(
        poutine.replay(cvae.model, trace=guide_trace)
    ).get_trace(xs, ys)
    assert guide_trace.nodes["z"]["value"].shape == (6, 5)
    y_site = model_trace.nodes["y"]
    assert y_site["is_observed"]
    model_trace.compute_log_prob()
    # the likelihood is the masked BCE over the hidden pixels, nothing else
    logits = cvae.generation_net(guide_trace.nodes["z"]["value"], xs.reshape(6, 784))
    assert torch.allclose(y_site["log_prob"], -masked_bce(logits, ys), atol=1e-4)
    assert cvae.generation_net.fc1.in_features == 5 + (784 if sees_input else 0)


def test_guide_without_y_uses_the_prior_network():
    cvae = CVAE(z_dim=4, hidden_1=16, hidden_2=16)
    xs, _ = _batch()
    trace = poutine.trace(cvae.guide).get_trace(xs)
    params = {name for name, site in trace.nodes.items() if site["type"] == "param"}
    assert any(p.startswith("prior_net") for p in params)
    assert not any(p.startswith("recognition_net") for p in params)
    set_seed(0)
    samples = Predictive(
        cvae.model, guide=cvae.guide, num_samples=7, return_sites=["y"]
    )(xs)["y"]
    assert samples.shape == (7, 6, 784) and ((samples >= 0) & (samples <= 1)).all()
    assert samples.std(0).mean() > 0  # different z, different completions
    direct = cvae.sample(xs, num_samples=3)
    assert direct.shape == (3, 6, 784)


def test_encoder_scale_stays_positive_and_finite():
    cvae = CVAE(z_dim=3, hidden_1=8, hidden_2=8)
    xs, ys = _batch()
    with torch.no_grad():
        cvae.recognition_net.head.bias.fill_(1e4)  # exp(1e4) would be inf
        _, big = cvae.posterior(xs, ys)
        cvae.recognition_net.head.bias.fill_(-1e4)  # exp(-1e4) would be 0
        _, small = cvae.posterior(xs, ys)
    assert torch.isfinite(big).all() and (big > 0).all()
    assert (small >= MIN_SCALE).all() and torch.isfinite(small.log()).all()


def test_one_svi_step_trains_the_cvae_but_not_the_baseline():
    pyro.clear_param_store()
    cvae = CVAE(z_dim=4, hidden_1=16, hidden_2=16)
    xs, ys = _batch()
    before = {k: v.clone() for k, v in cvae.state_dict().items()}
    svi = SVI(cvae.model, cvae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    loss = svi.step(xs, ys)
    assert math.isfinite(loss) and loss > 0
    changed = {k for k, v in cvae.state_dict().items() if not torch.equal(v, before[k])}
    assert {k.split(".")[0] for k in changed} == {
        "prior_net",
        "recognition_net",
        "generation_net",
    }
    assert not any(
        name.startswith("baseline") for name in pyro.get_param_store().keys()
    )


def test_likelihood_is_the_masked_bce_of_the_generation_network():
    """log p(y|x,z) for many z per image: the Bernoulli log-likelihood of the hidden
    pixels."""
    set_seed(0)
    cvae = CVAE(z_dim=4, hidden_1=16, hidden_2=16, decoder_sees_input=True)
    xs, ys = _batch(q=2, n=3)
    xs, ys = xs.reshape(3, 784), ys.reshape(3, 784)
    z = torch.randn(7, 3, 4)
    logits = cvae.generation_net(z, xs)
    assert logits.shape == (7, 3, 784)
    # p(y|x,z) reads x: the first layer's x-half counts
    assert not torch.allclose(logits, cvae.generation_net(z, torch.zeros_like(xs)))
    log_lik = cvae.log_likelihood(z, xs, ys)
    assert log_lik.shape == (7, 3) and torch.equal(log_lik, -masked_bce(logits, ys))
    hidden = xs == -1
    by_hand = ys * torch.nn.functional.logsigmoid(logits) + (
        1 - ys
    ) * torch.nn.functional.logsigmoid(-logits)
    assert torch.allclose(log_lik, (by_hand * hidden).sum(-1), atol=1e-4)


def test_sample_with_fixed_noise_is_loc_plus_scale_times_noise():
    set_seed(0)
    cvae = CVAE(z_dim=4, hidden_1=16, hidden_2=16).eval()
    xs, _ = _batch(q=1, n=3)
    noise = cvae.latent_noise(5, 3, torch.Generator().manual_seed(2))
    assert noise.shape == (5, 3, 4)
    assert torch.equal(noise, cvae.latent_noise(5, 3, torch.Generator().manual_seed(2)))
    loc, scale = cvae.prior(xs)
    expected = torch.sigmoid(
        cvae.generation_net(loc + scale * noise, xs.reshape(3, 784))
    )
    assert torch.equal(cvae.sample(xs, noise=noise), expected)
    assert cvae.sample(xs, num_samples=2).shape == (2, 3, 784)
