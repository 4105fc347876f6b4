from __future__ import annotations

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Predictive, Trace_ELBO

from cvae_helpers.config import set_seed
from cvae_helpers.data import hidden_pixels, mask_quadrants
from cvae_helpers.models import CVAE, MIN_SCALE, BaselineNet, masked_bce, softplus_sum
from cvae_helpers.training import make_adam


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
    model_trace = poutine.trace(poutine.replay(cvae.model, trace=guide_trace)).get_trace(xs, ys)
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
    samples = Predictive(cvae.model, guide=cvae.guide, num_samples=7, return_sites=["y"])(xs)["y"]
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
    assert {k.split(".")[0] for k in changed} == {"prior_net", "recognition_net", "generation_net"}
    assert not any(name.startswith("baseline") for name in pyro.get_param_store().keys())


def test_package_step_equals_pyro_svi_step():
    """Our step (Trace_ELBO loss, one torch Adam) does what pyro.infer.SVI does."""
    xs, ys = _batch()
    y_hat = torch.rand(6, 784)

    def fresh():
        set_seed(1)
        return CVAE(z_dim=4, hidden_1=16, hidden_2=16)

    ours = fresh()
    optimizer = make_adam([p for n, p in ours.named_parameters() if not n.startswith("baseline")], 1e-2)
    for step in range(3):
        set_seed(10 + step)
        loss = Trace_ELBO().differentiable_loss(ours.model, ours.guide, xs, ys, y_hat)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    pyro.clear_param_store()
    theirs = fresh()
    svi = SVI(theirs.model, theirs.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    for step in range(3):
        set_seed(10 + step)
        svi.step(xs, ys, y_hat)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), name


@pytest.mark.parametrize("sees_input", [False, True])
@pytest.mark.parametrize("q", [1, 3])
def test_hand_written_loss_equals_trace_elbo_loss_and_gradients(sees_input, q):
    """The training loss skips Pyro's tracing; for the same random state it draws the same z and
    gives the same loss and the same gradient for every parameter as Trace_ELBO."""
    set_seed(0)
    cvae = CVAE(z_dim=6, hidden_1=16, hidden_2=12, decoder_sees_input=sees_input)
    xs, ys = _batch(q=q, n=5)
    y_hat = torch.rand(5, 784)
    pixels = hidden_pixels(xs)
    assert pixels is not None and len(pixels) == 196 * (4 - q)

    def loss_and_grads(loss_fn):
        cvae.zero_grad()
        set_seed(7)
        loss = loss_fn()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in cvae.named_parameters()
                               if p.grad is not None}

    pyro_loss, pyro_grads = loss_and_grads(
        lambda: Trace_ELBO().differentiable_loss(cvae.model, cvae.guide, xs, ys, y_hat))
    for use_pixels in (None, pixels):
        loss, grads = loss_and_grads(lambda p=use_pixels: cvae.neg_elbo(xs, ys, y_hat, p))
        assert torch.allclose(loss, pyro_loss, rtol=1e-5), (loss, pyro_loss)
        assert grads.keys() == pyro_grads.keys()
        for name, grad in grads.items():
            assert torch.allclose(grad, pyro_grads[name], rtol=1e-4, atol=1e-5), name
    # another random state draws another z: the equality above is not an accident of the seed
    set_seed(8)
    assert not torch.allclose(cvae.neg_elbo(xs, ys, y_hat).detach(), pyro_loss)


def test_likelihood_of_the_hidden_pixels_only():
    set_seed(0)
    cvae = CVAE(z_dim=4, hidden_1=16, hidden_2=16, decoder_sees_input=True)
    xs, ys = _batch(q=2, n=3)
    xs, ys = xs.reshape(3, 784), ys.reshape(3, 784)
    pixels = hidden_pixels(xs)
    z = torch.randn(7, 3, 4)
    full = cvae.generation_net(z, xs)
    assert torch.allclose(cvae.generation_net(z, xs, pixels), full[..., pixels])
    assert torch.allclose(cvae.log_likelihood(z, xs, ys, pixels), -masked_bce(full, ys), atol=1e-4)
    assert torch.equal(cvae.log_likelihood(z, xs, ys), -masked_bce(full, ys))


def test_hidden_pixels_of_a_split():
    xs, _ = _batch(q=2, n=4)
    pixels = hidden_pixels(xs)
    assert pixels.tolist() == [r * 28 + c for r in range(28) for c in range(14, 28)]
    mixed = torch.cat([xs[:2], mask_quadrants(torch.rand(2, 28, 28), 3)[0]])
    assert hidden_pixels(mixed) is None  # different settings: no shared pixels to slice


def test_fast_inference_layers_equal_the_training_layers():
    """Without gradients the generation network may run oneDNN's fused linear + ReLU; it must
    compute what the autograd path computes."""
    set_seed(0)
    net = CVAE(z_dim=6, hidden_1=32, hidden_2=24, decoder_sees_input=True).generation_net
    z, xs = torch.randn(5, 3, 6), torch.rand(3, 784)
    pixels = torch.arange(100, 300)
    with torch.no_grad():
        fast, fast_part = net(z, xs), net(z, xs, pixels)
    slow, slow_part = net(z, xs), net(z, xs, pixels)  # gradients enabled: plain F.linear
    assert slow.requires_grad and fast.shape == (5, 3, 784) and fast_part.shape == (5, 3, 200)
    assert torch.allclose(fast, slow, atol=1e-5) and torch.allclose(fast_part, slow_part, atol=1e-5)
    prior_net, filled = CVAE(z_dim=6, hidden_1=32, hidden_2=24).prior_net, torch.rand(3, 784)
    with torch.no_grad():
        fast_loc, fast_scale = prior_net(filled)
    slow_loc, slow_scale = prior_net(filled)
    assert slow_loc.requires_grad and not fast_loc.requires_grad
    assert torch.allclose(fast_loc, slow_loc, atol=1e-5)
    assert torch.allclose(fast_scale, slow_scale, atol=1e-5)


@pytest.mark.parametrize("pixels", [588, 392, 196, 784, 7])
def test_fast_softplus_sum_equals_softplus(pixels):
    """Evaluation's grouped-product softplus sum against torch's softplus, in float64, on logits
    from the saturated tails to 0 (e^{-|l|} underflows, or 1 + e^{-|l|} rounds to 1)."""
    set_seed(0)
    logits = torch.cat([torch.randn(50, 3, pixels) * 8, torch.full((1, 3, pixels), -120.0),
                        torch.full((1, 3, pixels), 95.0), torch.zeros(1, 3, pixels)])
    exact = F.softplus(logits.double()).sum(-1)
    with torch.no_grad():
        fast = softplus_sum(logits)
    assert fast.shape == (53, 3) and fast.dtype == torch.float32
    assert torch.allclose(fast.double(), exact, rtol=1e-6, atol=pixels * 1e-7)
    slow = softplus_sum(logits.requires_grad_())  # the training path: torch's softplus
    assert slow.requires_grad and torch.allclose(slow.detach().double(), exact, rtol=1e-6,
                                                 atol=pixels * 1e-7)
