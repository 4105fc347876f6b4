"""The fast engine (cvae_helpers.fast) computes what the readable Pyro path computes.

On the same random state every training loss and gradient equals Pyro's (``Trace_ELBO``,
``HybridELBO``) to float rounding, several steps of the fast engine train the same
weights as ``SVI`` does, and every estimator equals the plain one
(``evaluation.log_weights``) on the same noise. The speed tricks are checked one by one
against the plain modules' forward.
"""

from __future__ import annotations

from dataclasses import replace

import pyro
import pytest
import torch
import torch.nn.functional as F
from conftest import synthetic_split
from pyro.distributions import Normal

from cvae_helpers import evaluation, fast, training
from cvae_helpers.config import RunSpec, get_profile, set_seed, with_levers
from cvae_helpers.data import MaskedSplit, QuadrantSplits, hidden_pixels, mask_quadrants
from cvae_helpers.engines import ENGINES, engine_of
from cvae_helpers.families import get_family
from cvae_helpers.models import CVAE, BaselineNet, flatten, masked_bce

# (family, alpha): the hybrid at the authors' weight and at another one.
SETTINGS = [("cvae", 0.5), ("gsnn", 0.5), ("hybrid", 0.5), ("hybrid", 0.2)]
SAMPLE_SIZES = [1, 7, 30]


def _batch(q=2, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs, ys = mask_quadrants(torch.rand(n, 28, 28, generator=g), q)
    return xs.reshape(n, 784), ys.reshape(n, 784)


def _pyro_loss(cvae, family, alpha, xs, ys, y_hat, analytic_kl=False):
    """The loss Pyro's ``SVI`` minimises for ``family``, as a differentiable tensor."""
    loss = family.svi_loss(cvae, alpha, analytic_kl)
    if family.cvae_share is None:  # HybridELBO, called as SVI calls it
        return loss(cvae.model, cvae.guide, xs, ys, y_hat)
    return loss.differentiable_loss(cvae.model, family.guide(cvae), xs, ys, y_hat)


def _unsliced_fast_loss(cvae, family, alpha, xs, ys, y_hat):
    """fast.training_loss without the hidden-pixel slicing: all 784 logits."""
    if family.cvae_share is None:
        return alpha * fast.neg_elbo(cvae, xs, ys, y_hat) + (
            1 - alpha
        ) * fast.gsnn_loss(cvae, xs, ys, y_hat)
    if family.recognition:
        return fast.neg_elbo(cvae, xs, ys, y_hat)
    return fast.gsnn_loss(cvae, xs, ys, y_hat)


def _loss_and_grads(cvae, compute):
    cvae.zero_grad()
    pyro.clear_param_store()
    set_seed(7)
    loss = compute()
    loss.backward()
    grads = {
        name: p.grad.clone()
        for name, p in cvae.named_parameters()
        if p.grad is not None
    }
    return loss.detach(), grads


@pytest.mark.parametrize("q", [1, 3])
@pytest.mark.parametrize("sees_input", [False, True])
@pytest.mark.parametrize(("name", "alpha"), SETTINGS)
def test_training_loss_and_gradients_equal_pyro(name, alpha, sees_input, q):
    """For the same random state the fast loss draws the same z as Pyro's guide and
    gives the same loss and the same gradient for every parameter."""
    family = get_family(name)
    set_seed(0)
    cvae = CVAE(
        z_dim=6,
        hidden_1=16,
        hidden_2=12,
        decoder_sees_input=sees_input,
        recognition=family.recognition,
    )
    xs, ys = _batch(q=q)
    y_hat = torch.rand(5, 784)
    assert len(hidden_pixels(xs)) == 196 * (
        4 - q
    )  # the fast loss scores these logits only
    pyro_loss, pyro_grads = _loss_and_grads(
        cvae, lambda: _pyro_loss(cvae, family, alpha, xs, ys, y_hat)
    )
    training_loss = fast.training_loss(cvae, family, alpha)
    for compute in (
        lambda: training_loss(xs, ys, y_hat),
        lambda: _unsliced_fast_loss(cvae, family, alpha, xs, ys, y_hat),
    ):
        loss, grads = _loss_and_grads(cvae, compute)
        assert torch.allclose(loss, pyro_loss, rtol=1e-5), (loss, pyro_loss)
        assert grads.keys() == pyro_grads.keys()
        for key, grad in grads.items():
            assert torch.allclose(grad, pyro_grads[key], rtol=1e-4, atol=1e-5), key
    trained = {
        key.split(".")[0] for key in pyro_grads
    }  # nothing reaches the frozen baseline
    assert trained == {"prior_net", "generation_net"} | (
        {"recognition_net"} if family.recognition else set()
    )
    # another random state draws another z: the equality above is not an accident of the
    # seed
    set_seed(8)
    assert not torch.allclose(training_loss(xs, ys, y_hat).detach(), pyro_loss)


@pytest.mark.parametrize("q", [1, 3])
@pytest.mark.parametrize("sees_input", [False, True])
@pytest.mark.parametrize(("name", "alpha"), [("cvae", 0.5), ("hybrid", 0.2)])
def test_analytic_kl_loss_and_gradients_equal_trace_mean_field(
    name, alpha, sees_input, q
):
    """The protocol lever analytic_kl: the fast loss with KL(q || p) in closed form
    equals ``TraceMeanField_ELBO`` (and, for the hybrid, HybridELBO of it), loss and
    gradients, on the same random state; and it differs from the sampled KL's."""
    family = get_family(name)
    set_seed(0)
    cvae = CVAE(z_dim=6, hidden_1=16, hidden_2=12, decoder_sees_input=sees_input)
    xs, ys = _batch(q=q)
    y_hat = torch.rand(5, 784)
    pyro_loss, pyro_grads = _loss_and_grads(
        cvae, lambda: _pyro_loss(cvae, family, alpha, xs, ys, y_hat, True)
    )
    training_loss = fast.training_loss(cvae, family, alpha, analytic_kl=True)
    loss, grads = _loss_and_grads(cvae, lambda: training_loss(xs, ys, y_hat))
    assert torch.allclose(loss, pyro_loss, rtol=1e-5), (loss, pyro_loss)
    assert grads.keys() == pyro_grads.keys()
    for key, grad in grads.items():
        assert torch.allclose(grad, pyro_grads[key], rtol=1e-4, atol=1e-5), key
    sampled, _ = _loss_and_grads(
        cvae, lambda: fast.training_loss(cvae, family, alpha)(xs, ys, y_hat)
    )
    assert (sampled - loss).abs() > 1e-3  # same z, another estimate of the KL


@pytest.mark.parametrize(
    ("name", "alpha", "levers"),
    [
        ("cvae", 0.5, ()),
        ("gsnn", 0.5, ()),
        ("hybrid", 0.2, ()),
        ("cvae", 0.5, ("lr-decay", "analytic-kl")),
    ],
)
def test_fast_steps_train_the_weights_svi_trains(name, alpha, levers, tmp_path):
    """Three steps of the fast engine (fused torch Adam) and of Pyro's SVI
    (pyro.optim.Adam) from the same weights and seeds: the same losses and weights, up
    to rounding."""
    profile = with_levers(get_profile("quick", learning_rate=1e-2), levers)
    spec = RunSpec.create(
        2, profile, device="cpu", checkpoint_dir=tmp_path, family=name, alpha=alpha
    )
    xs, ys = _batch(q=2, n=6)
    y_hat = torch.rand(6, 784)

    def train(make_steps):
        set_seed(1)
        cvae = CVAE(
            z_dim=4, hidden_1=16, hidden_2=16, recognition=spec.family.recognition
        )
        initial = {key: value.clone() for key, value in cvae.state_dict().items()}
        pyro.clear_param_store()
        steps = make_steps(cvae, spec)
        losses, rates = [], []
        for step in range(4):
            set_seed(10 + step)
            losses.append(float(steps.step(xs, ys, y_hat)))
            if (
                profile.lr_decay is not None
            ):  # an epoch that improved, then one that did not
                steps.optim.step([100.0, 90.0, 200.0, 200.0][step])
                rates.append(training.current_lr(steps.optim))
        if profile.lr_decay is not None:
            assert rates == pytest.approx([1e-2, 1e-2, 5e-3, 2.5e-3])
            state = steps.optim.get_state()  # the scheduler's state is checkpointed too
            steps.optim.set_state(state)
        pyro.clear_param_store()
        return initial, cvae.state_dict(), losses

    initial, fast_state, fast_losses = train(fast.cvae_steps)
    _, svi_state, svi_losses = train(training.make_svi)
    assert fast_losses == pytest.approx(svi_losses, rel=1e-5)
    assert fast_state.keys() == svi_state.keys()
    for key, value in fast_state.items():
        assert torch.allclose(value, svi_state[key], rtol=0, atol=1e-5), key
        moved = (value - initial[key]).abs().max().item()
        if key.startswith("baseline."):
            assert moved == 0, key  # frozen
        else:
            assert moved > 1e-3, key  # trained, far beyond the tolerance above


def test_fast_steps_are_shaped_like_svi(tiny_spec):
    set_seed(0)
    cvae = CVAE(z_dim=4, hidden_1=16, hidden_2=16)
    xs, ys = _batch()
    y_hat = torch.rand(5, 784)
    steps = fast.cvae_steps(cvae, tiny_spec)
    loss = steps.step(xs, ys, y_hat)
    assert (
        isinstance(loss, torch.Tensor) and loss.shape == () and not loss.requires_grad
    )
    evaluated = steps.evaluate_loss(xs, ys, y_hat)
    assert torch.isfinite(evaluated) and not evaluated.requires_grad
    state = steps.optim.get_state()
    assert state["state"]  # Adam's moments, checkpointed with the run
    steps.optim.set_state(state)
    assert (
        ENGINES["pyro"].cvae_steps is training.make_svi
        and ENGINES["fast"].cvae_steps is fast.cvae_steps
    )
    assert ENGINES["pyro"].log_weights is evaluation.log_weights
    assert ENGINES["fast"].log_weights is fast.log_weights
    assert ENGINES["pyro"].baseline_steps is training.baseline_steps
    assert ENGINES["fast"].baseline_steps is fast.baseline_steps
    assert (
        engine_of(tiny_spec).name == "pyro"
        and engine_of(replace(tiny_spec, engine="fast")).name == "fast"
    )


def _estimator_model(sees_input, dtype, recognition=True):
    set_seed(0)
    cvae = CVAE(
        z_dim=8,
        hidden_1=32,
        hidden_2=24,
        baseline=BaselineNet(32, 32),
        decoder_sees_input=sees_input,
        recognition=recognition,
    )
    return cvae.to(dtype).eval()


def _split(n, q, dtype=torch.float32):
    g = torch.Generator().manual_seed(q)
    xs, ys = mask_quadrants(torch.rand(n, 28, 28, generator=g, dtype=dtype) ** 3, q)
    return MaskedSplit(xs, ys, torch.zeros(n))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("q", [1, 2, 3])
@pytest.mark.parametrize("sees_input", [False, True])
def test_fast_estimators_equal_the_plain_ones_on_the_same_noise(
    sees_input, q, dtype, monkeypatch
):
    """MC, IS and -ELBO at every S, through fast.log_weights (chunked) and through the
    plain formula, from the same seed. In float64 they agree to 1e-9 nats per image; in
    float32 (the engine's arithmetic, with oneDNN) to 1e-4 nats per image plus 4 float32
    steps of the value: at 400 nats one step is 3e-5 nats, and the two sums round
    differently."""
    monkeypatch.setattr(
        fast, "CHUNK_ROWS", 30
    )  # a few samples per chunk, the last one short
    calls = []
    log_likelihood = fast.log_likelihood
    monkeypatch.setattr(
        fast, "log_likelihood", lambda *args: calls.append(1) or log_likelihood(*args)
    )
    cvae = _estimator_model(sees_input, dtype)
    split = _split(23, q, dtype)
    for batch_size in (7, 23):  # 4 samples per chunk, or 1
        set_seed(5)
        plain = evaluation.estimates_against_samples(
            cvae,
            split,
            SAMPLE_SIZES,
            batch_size=batch_size,
            weigh=evaluation.log_weights,
        )
        calls.clear()
        set_seed(5)
        quick = evaluation.estimates_against_samples(
            cvae, split, SAMPLE_SIZES, batch_size=batch_size, weigh=fast.log_weights
        )
        assert len(calls) > 2 * 4  # chunked: more calls than batches × proposals
        assert plain.keys() == quick.keys() == {"mc", "is", "neg_elbo"}
        for name, values in plain.items():
            assert values.shape == quick[name].shape == (len(SAMPLE_SIZES), 23)
            if dtype == torch.float64:
                assert (quick[name] - values).abs().max() <= 1e-9, name
            else:
                assert torch.allclose(quick[name], values, rtol=5e-7, atol=1e-4), name
    # other noise gives other numbers: the comparison is not between constants
    set_seed(6)
    other = evaluation.estimates_against_samples(
        cvae, split, SAMPLE_SIZES, batch_size=7, weigh=fast.log_weights
    )
    assert (other["is"] - quick["is"]).abs().max() > 1e-2


def test_fast_evaluation_of_a_gsnn_equals_the_plain_one(monkeypatch):
    """A GSNN has no q(z|x,y): MC only, through either engine's log-weights."""
    monkeypatch.setattr(fast, "CHUNK_ROWS", 30)
    gsnn = _estimator_model(False, torch.float32, recognition=False)
    split = _split(20, 2)
    set_seed(3)
    plain = evaluation.evaluate(
        gsnn.baseline, gsnn, split, num_samples=12, batch_size=9
    )
    set_seed(3)
    quick = evaluation.evaluate(
        gsnn.baseline, gsnn, split, num_samples=12, batch_size=9, weigh=fast.log_weights
    )
    assert plain.keys() == quick.keys() == {"baseline_nll", "mc"}
    assert quick["baseline_nll"] == plain["baseline_nll"]
    assert quick["mc"].mean == pytest.approx(plain["mc"].mean, rel=5e-7, abs=1e-4)
    assert quick["mc"].stderr == pytest.approx(plain["mc"].stderr, rel=1e-4)
    xs, ys = flatten(split.inputs), flatten(split.targets)
    for weigh in (evaluation.log_weights, fast.log_weights):
        with pytest.raises(ValueError, match="no recognition network"):
            weigh(gsnn, xs, ys, 3, "posterior")
        with pytest.raises(ValueError, match="proposal must be"):
            weigh(gsnn, xs, ys, 3, "posterior ")


@pytest.mark.parametrize("proposal", ["posterior", "prior"])
def test_fast_log_weights_draw_the_z_that_the_proposal_samples(proposal, monkeypatch):
    """z = loc + scale * noise, noise drawn at once and cut into chunks, is bit for bit
    the z that ``proposal.sample((S,))`` draws from the same random state (the proposal
    as the fast engine computes it; the plain network's loc and scale differ from it by
    rounding only)."""
    monkeypatch.setattr(fast, "CHUNK_ROWS", 12)  # 2 samples per chunk of 5 images
    drawn = []
    log_likelihood = fast.log_likelihood
    monkeypatch.setattr(
        fast,
        "log_likelihood",
        lambda cvae, z, *rest: drawn.append(z) or log_likelihood(cvae, z, *rest),
    )
    cvae = _estimator_model(True, torch.float32)
    split = _split(5, 1)
    xs, ys = flatten(split.inputs), flatten(split.targets)
    with torch.no_grad():
        if proposal == "posterior":
            q, plain = fast.posterior(cvae, xs, ys), Normal(*cvae.posterior(xs, ys))
        else:
            q, plain = fast.prior(cvae, xs), Normal(*cvae.prior(xs))
        set_seed(1)
        expected = q.sample((9,))
        set_seed(1)
        weights = fast.log_weights(cvae, xs, ys, 9, proposal)
        set_seed(1)
        plain_z = plain.sample((9,))
    assert weights.shape == (9, 5) and len(drawn) == 5
    assert torch.equal(torch.cat(drawn), expected)
    assert torch.allclose(torch.cat(drawn), plain_z, rtol=0, atol=1e-5)
    assert not torch.allclose(expected[0], expected[1])  # a new draw per sample


@pytest.mark.parametrize("pixels", [588, 392, 196, 784, 7])
def test_softplus_sum_equals_softplus(pixels):
    """Evaluation's grouped-product softplus sum against torch's softplus, in float64,
    on logits from the saturated tails to 0 (e^{-|l|} underflows, or 1 + e^{-|l|} rounds
    to 1)."""
    set_seed(0)
    logits = torch.cat(
        [
            torch.randn(50, 3, pixels) * 8,
            torch.full((1, 3, pixels), -120.0),
            torch.full((1, 3, pixels), 95.0),
            torch.zeros(1, 3, pixels),
        ]
    )
    exact = F.softplus(logits.double()).sum(-1)
    with torch.no_grad():
        quick = fast.softplus_sum(logits)
    assert quick.shape == (53, 3) and quick.dtype == torch.float32
    assert torch.allclose(quick.double(), exact, rtol=1e-6, atol=pixels * 1e-7)
    slow = fast.softplus_sum(
        logits.requires_grad_()
    )  # the training path: torch's softplus
    assert slow.requires_grad and torch.allclose(
        slow.detach().double(), exact, rtol=1e-6, atol=pixels * 1e-7
    )


@pytest.mark.parametrize("onednn", [True, False])
def test_fast_layers_equal_the_plain_modules(onednn, monkeypatch):
    """dense (oneDNN's fused linear + ReLU without gradients, where this torch has it),
    fast.gaussian and fast.generation_logits (p(y|x,z)'s first layer split without
    gradients, the hidden pixels' logits only) compute what the plain modules' forward
    computes."""
    monkeypatch.setattr(fast, "ONEDNN_LINEAR", onednn and fast.ONEDNN_LINEAR)
    set_seed(0)
    paper = CVAE(z_dim=6, hidden_1=32, hidden_2=24, decoder_sees_input=True)
    example = CVAE(z_dim=6, hidden_1=32, hidden_2=24)
    z, xs, filled = torch.randn(5, 3, 6), torch.rand(3, 784), torch.rand(3, 784)
    pixels = torch.arange(100, 300)
    for grad in (True, False):
        for net in (paper.generation_net, example.generation_net):
            reference = net(z, xs).detach()
            with torch.set_grad_enabled(grad):
                logits, part = (
                    fast.generation_logits(net, z, xs),
                    fast.generation_logits(net, z, xs, pixels),
                )
            assert (
                logits.requires_grad is grad
                and logits.shape == (5, 3, 784)
                and part.shape == (5, 3, 200)
            )
            assert torch.allclose(logits, reference, atol=1e-5) and torch.allclose(
                part, reference[..., pixels], atol=1e-5
            )
        loc, scale = paper.prior_net(filled)
        with torch.set_grad_enabled(grad):
            fast_loc, fast_scale = fast.gaussian(paper.prior_net, filled)
        assert fast_loc.requires_grad is grad
        assert torch.allclose(fast_loc, loc, atol=1e-5) and torch.allclose(
            fast_scale, scale, atol=1e-5
        )
        layer, hidden = paper.generation_net.fc2, torch.randn(4, 2, 32)
        for relu in (True, False):
            expected = F.relu(layer(hidden)) if relu else layer(hidden)
            with torch.set_grad_enabled(grad):
                out = fast.dense(hidden, layer.weight, layer.bias, relu=relu)
            assert out.shape == (4, 2, 24) and torch.allclose(out, expected, atol=1e-5)
            assert (out >= 0).all() if relu else (out < 0).any()


def test_a_nan_stays_nan_on_the_fast_path():
    """oneDNN's fused ReLU would turn a NaN into 0 and a corrupt image into a finite
    score: the fast path keeps NaN where the plain modules do, and nowhere else."""
    set_seed(0)
    layer = torch.nn.Linear(6, 5)
    x = torch.randn(4, 6)
    x[1, 2] = float("nan")
    with torch.no_grad():
        for relu in (True, False):
            expected = F.relu(layer(x)) if relu else layer(x)
            out = fast.dense(x, layer.weight, layer.bias, relu=relu)
            assert torch.equal(out.isnan(), expected.isnan()) and out[1].isnan().all()
    cvae = _estimator_model(False, torch.float32)
    split = _split(6, 1)
    clean, ys = flatten(split.inputs), flatten(split.targets)
    xs = clean.clone()
    xs[3, 0] = float("nan")  # one given pixel of one image
    others = [0, 1, 2, 4, 5]
    for proposal in ("posterior", "prior"):
        with pytest.raises(
            ValueError, match="invalid values"
        ):  # the plain path's Normal refuses it
            evaluation.log_weights(cvae, xs, ys, 4, proposal)
        set_seed(2)
        quick = fast.log_weights(cvae, xs, ys, 4, proposal)
        set_seed(2)
        reference = fast.log_weights(cvae, clean, ys, 4, proposal)
        assert quick[:, 3].isnan().all() and torch.isfinite(quick[:, others]).all()
        assert torch.allclose(
            quick[:, others], reference[:, others], rtol=1e-6, atol=1e-4
        )


@pytest.mark.parametrize("sees_input", [False, True])
def test_fast_log_likelihood_equals_the_models(sees_input):
    """All logits or the hidden pixels' only, with gradients (training) or without them
    (evaluation: split first layer, grouped softplus sum): CVAE.log_likelihood's
    numbers."""
    set_seed(0)
    cvae = CVAE(z_dim=4, hidden_1=16, hidden_2=16, decoder_sees_input=sees_input)
    xs, ys = _batch(q=2, n=3)
    pixels = hidden_pixels(xs)
    z = torch.randn(7, 3, 4)
    expected = cvae.log_likelihood(z, xs, ys).detach()
    assert torch.equal(expected, -masked_bce(cvae.generation_net(z, xs), ys).detach())
    for grad in (True, False):
        for use_pixels in (None, pixels):
            with torch.set_grad_enabled(grad):
                got = fast.log_likelihood(cvae, z, xs, ys, use_pixels)
            assert got.shape == (7, 3) and got.requires_grad is grad
            assert torch.allclose(got, expected, atol=1e-4), (grad, use_pixels is None)


def test_fast_prior_and_posterior_equal_the_models():
    set_seed(0)
    cvae = CVAE(z_dim=4, hidden_1=16, hidden_2=16)
    xs, ys = _batch(q=1)
    y_hat = torch.rand(5, 784)
    for fast_dist, (loc, scale) in (
        (fast.prior(cvae, xs, y_hat), cvae.prior(xs, y_hat)),
        (fast.prior(cvae, xs), cvae.prior(xs)),  # y_hat from the frozen baseline
        (fast.posterior(cvae, xs, ys), cvae.posterior(xs, ys)),
    ):
        assert torch.allclose(fast_dist.loc, loc, atol=1e-6) and torch.allclose(
            fast_dist.scale, scale, atol=1e-6
        )
    assert not torch.allclose(fast.prior(cvae, xs, y_hat).loc, fast.prior(cvae, xs).loc)
    gsnn = CVAE(z_dim=4, hidden_1=16, hidden_2=16, recognition=False)
    with pytest.raises(ValueError, match="no recognition network"):
        fast.posterior(gsnn, xs, ys)


def test_gaussian_log_ratio_equals_the_normals_log_prob():
    """log p(z|x) - log q(z|x,y) from the noise equals the Normals' log_prob."""
    set_seed(0)
    cvae = CVAE(z_dim=8, hidden_1=32, hidden_2=32, baseline=BaselineNet(32, 32)).eval()
    xs, ys = _batch(q=1)
    with torch.no_grad():
        prior, posterior = Normal(*cvae.prior(xs)), Normal(*cvae.posterior(xs, ys))
        z = posterior.sample((30,))
        noise = (z - posterior.loc) / posterior.scale
        ratio = fast.gaussian_log_ratio(z, noise, prior, posterior)
    assert ratio.shape == (30, 5)
    expected = prior.log_prob(z).sum(-1) - posterior.log_prob(z).sum(-1)
    assert torch.allclose(ratio, expected, rtol=1e-5, atol=1e-3)


def test_hidden_pixels_of_a_split():
    xs, _ = mask_quadrants(torch.rand(4, 28, 28), 2)
    pixels = hidden_pixels(xs)
    assert pixels.tolist() == [r * 28 + c for r in range(28) for c in range(14, 28)]
    mixed = torch.cat([xs[:2], mask_quadrants(torch.rand(2, 28, 28), 3)[0]])
    assert hidden_pixels(mixed) is None  # different settings: no shared pixels to slice


@pytest.mark.parametrize("family", ["cvae", "gsnn", "hybrid"])
def test_both_engines_train_the_same_trajectory(family, tmp_path):
    """train_cvae with Pyro's SVI and with the fast engine, from the same seed, for two
    epochs: per epoch the training and validation losses agree to 1e-5 (they differ by
    rounding only, measured at 1e-7), while they change by about 10% from one epoch to
    the next."""
    splits = QuadrantSplits(
        2,
        synthetic_split(96, 2, 0),
        synthetic_split(48, 2, 1),
        synthetic_split(32, 2, 2),
    )
    profile = get_profile("quick", max_epochs=2, batch_size=32)
    spec = RunSpec.create(
        2, profile, device="cpu", checkpoint_dir=tmp_path, family=family
    )
    set_seed(0)
    baseline = BaselineNet()
    _, pyro_history = training.train_cvae(
        splits, baseline, spec, progress=False, make_steps=training.make_svi
    )
    fast_spec = RunSpec.create(
        2, profile, device="cpu", checkpoint_dir=tmp_path, family=family, engine="fast"
    )
    _, fast_history = training.train_cvae(
        splits, baseline, fast_spec, progress=False, make_steps=fast.cvae_steps
    )
    assert pyro_history["engines"] == ["pyro", "pyro"] and fast_history["engines"] == [
        "fast",
        "fast",
    ]
    for key in ("train_loss", "val_loss"):
        ours, theirs = fast_history[key], pyro_history[key]
        assert len(ours) == len(theirs) == 2
        assert ours == pytest.approx(theirs, rel=1e-5), key
        assert abs(theirs[1] - theirs[0]) > 1e-3 * theirs[0]  # 100 times the tolerance
