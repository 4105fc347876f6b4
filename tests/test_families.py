"""GSNN and hybrid losses: Pyro's Trace_ELBO, the hand-written training losses and a hand
computation with fixed noise all give the same number (and the first two the same gradients)."""

from __future__ import annotations

import math

import pyro.poutine as poutine
import pytest
import torch

from cvae_helpers.config import set_seed
from cvae_helpers.data import hidden_pixels, mask_quadrants
from cvae_helpers.models import CVAE, pyro_loss


def _batch(q=2, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs, ys = mask_quadrants(torch.rand(n, 28, 28, generator=g), q)
    return xs.reshape(n, 784), ys.reshape(n, 784)


def _bernoulli_nll(logits, xs, ys):
    """-log p(y|x,z) of the hidden pixels, written out with sigmoid and log."""
    p = torch.sigmoid(logits.double())
    hidden = xs == -1
    t = torch.where(hidden, ys, 0.0).double()
    per_pixel = -(t * p.log() + (1 - t) * (1 - p).log())
    return (per_pixel * hidden).sum(-1)


def _normal_log_density(z, loc, scale):
    z, loc, scale = z.double(), loc.double(), scale.double()
    return (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


@pytest.mark.parametrize("sees_input", [False, True])
def test_gsnn_loss_equals_a_hand_computation_with_fixed_noise(sees_input):
    set_seed(0)
    gsnn = CVAE(z_dim=6, hidden_1=16, hidden_2=12, decoder_sees_input=sees_input, recognition=False)
    xs, ys = _batch()
    y_hat = torch.rand(5, 784)
    set_seed(3)
    loss = gsnn.gsnn_loss(xs, ys, y_hat)
    set_seed(3)
    noise = torch.randn(5, 6)
    with torch.no_grad():
        loc, scale = gsnn.prior(xs, y_hat)
        z = loc + scale * noise  # the reparameterised draw from p(z|x)
        expected = _bernoulli_nll(gsnn.generation_net(z, xs), xs, ys).sum()
    assert torch.allclose(loss.double(), expected, rtol=1e-5)
    assert gsnn.recognition_net is None


@pytest.mark.parametrize("alpha", [0.5, 0.2])
def test_hybrid_loss_equals_a_hand_computation_with_fixed_noise(alpha):
    set_seed(0)
    model = CVAE(z_dim=6, hidden_1=16, hidden_2=12, decoder_sees_input=True)
    xs, ys = _batch(q=1)
    y_hat = torch.rand(5, 784)
    set_seed(4)
    loss = model.hybrid_loss(xs, ys, y_hat, alpha=alpha)
    set_seed(4)
    noise_q, noise_p = torch.randn(5, 6), torch.randn(5, 6)  # q's draw first, then p's
    with torch.no_grad():
        prior_loc, prior_scale = model.prior(xs, y_hat)
        post_loc, post_scale = model.posterior(xs, ys)
        z_q = post_loc + post_scale * noise_q
        cvae_term = (
            _bernoulli_nll(model.generation_net(z_q, xs), xs, ys)
            - _normal_log_density(z_q, prior_loc, prior_scale)
            + _normal_log_density(z_q, post_loc, post_scale)
        ).sum()
        z_p = prior_loc + prior_scale * noise_p
        gsnn_term = _bernoulli_nll(model.generation_net(z_p, xs), xs, ys).sum()
    expected = alpha * cvae_term + (1 - alpha) * gsnn_term
    assert torch.allclose(loss.double(), expected, rtol=1e-5)
    # and the weighting matters: the two terms differ
    assert not torch.allclose(cvae_term, gsnn_term)


@pytest.mark.parametrize("family", ["gsnn", "hybrid"])
@pytest.mark.parametrize("sees_input", [False, True])
def test_training_loss_equals_pyro_loss_and_gradients(family, sees_input):
    """The hand-written losses skip Pyro's tracing; for the same random state they draw the same
    z and give the loss and gradients of Trace_ELBO with the GSNN guide (or the weighted sum)."""
    set_seed(0)
    model = CVAE(z_dim=6, hidden_1=16, hidden_2=12, decoder_sees_input=sees_input, recognition=family != "gsnn")
    xs, ys = _batch(q=3)
    y_hat = torch.rand(5, 784)
    pixels = hidden_pixels(xs)

    def loss_and_grads(loss_fn):
        model.zero_grad()
        set_seed(7)
        loss = loss_fn()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return loss.detach(), grads

    pyro_value, pyro_grads = loss_and_grads(lambda: pyro_loss(model, family, xs, ys, y_hat, alpha=0.3))
    for use_pixels in (None, pixels):
        ours = model.training_loss(family, alpha=0.3)
        value, grads = loss_and_grads(lambda p=use_pixels, f=ours: f(xs, ys, y_hat, p))
        assert torch.allclose(value, pyro_value, rtol=1e-5), (value, pyro_value)
        assert grads.keys() == pyro_grads.keys()
        for name, grad in grads.items():
            assert torch.allclose(grad, pyro_grads[name], rtol=1e-4, atol=1e-5), name
    trained = {name.split(".")[0] for name in pyro_grads}
    if family == "gsnn":  # no recognition network, and nothing reaches the frozen baseline
        assert trained == {"prior_net", "generation_net"}
    else:
        assert trained == {"prior_net", "recognition_net", "generation_net"}


def test_gsnn_guide_samples_from_the_prior_network():
    set_seed(0)
    gsnn = CVAE(z_dim=4, hidden_1=16, hidden_2=12, recognition=False)
    xs, ys = _batch()
    trace = poutine.trace(gsnn.gsnn_guide).get_trace(xs, ys)
    site = trace.nodes["z"]
    loc, scale = gsnn.prior(xs)
    assert site["fn"].base_dist.loc.shape == (5, 4)
    assert torch.allclose(site["fn"].base_dist.loc, loc) and torch.allclose(site["fn"].base_dist.scale, scale)
    assert site["value"].requires_grad  # reparameterised: the gradient flows through z


def test_a_gsnn_has_no_posterior_to_ask_for():
    gsnn = CVAE(z_dim=4, hidden_1=8, hidden_2=8, recognition=False)
    xs, ys = _batch()
    with pytest.raises(ValueError, match="no recognition network"):
        gsnn.posterior(xs, ys)
    with pytest.raises(ValueError, match="Unknown model family"):
        gsnn.training_loss("vae")


def test_the_cvae_cache_key_is_unchanged_and_the_families_have_their_own(tiny_spec):
    """Checkpoints of CVAEs trained before the families existed stay valid: the CVAE's key has
    exactly the keys it always had; the GSNN and the hybrid add theirs, in their own files."""
    from cvae_helpers.pipeline import checkpoint_paths
    from cvae_helpers.training import cvae_config

    model = CVAE(z_dim=8, hidden_1=16, hidden_2=16)
    cvae_key = cvae_config(tiny_spec, model, {"b": 1})
    assert set(cvae_key) == {
        "model",
        "num_quadrant_inputs",
        "seed",
        "z_dim",
        "hidden_1",
        "hidden_2",
        "decoder_sees_input",
        "loss",
        "precision",
        "profile",
        "baseline",
    }
    assert cvae_key["loss"] == "neg_elbo" and cvae_key["model"] == "cvae"
    gsnn_key = cvae_config(tiny_spec.with_family("gsnn"), model, {"b": 1})
    hybrid_key = cvae_config(tiny_spec.with_family("hybrid", alpha=0.25), model, {"b": 1})
    assert gsnn_key["family"] == "gsnn" and gsnn_key["loss"] == "gsnn_nll" and "alpha" not in gsnn_key
    assert hybrid_key["family"] == "hybrid" and hybrid_key["alpha"] == 0.25
    names = {
        spec.family + str(spec.alpha): checkpoint_paths(spec)[1].name
        for spec in (
            tiny_spec,
            tiny_spec.with_family("gsnn"),
            tiny_spec.with_family("hybrid"),
            tiny_spec.with_family("hybrid", alpha=0.25).with_decoder(True),
        )
    }
    assert names == {
        "cvae0.5": "cvae_pyz.pt",
        "gsnn0.5": "gsnn_pyz.pt",
        "hybrid0.5": "hybrid_pyz.pt",
        "hybrid0.25": "hybrid_a0.25_pyxz.pt",
    }
    with pytest.raises(ValueError, match="Unknown model family"):
        tiny_spec.with_family("vae")
    with pytest.raises(ValueError, match="alpha"):
        tiny_spec.with_family("hybrid", alpha=1.5)


@pytest.mark.parametrize("family", ["gsnn", "hybrid"])
def test_families_train_with_early_stopping_and_are_evaluated(tiny_splits, tiny_spec, family, tmp_path):
    from cvae_helpers.checkpoints import CheckpointMismatchError, load_checkpoint
    from cvae_helpers.evaluation import evaluate
    from cvae_helpers.training import train_baseline, train_cvae

    spec = tiny_spec.with_family(family)
    baseline, _ = train_baseline(tiny_splits, spec, progress=False)
    path = tmp_path / f"{family}.pt"
    kwargs = dict(baseline_cfg={"b": 1}, z_dim=8, hidden_1=32, hidden_2=32, progress=False)
    model, history = train_cvae(tiny_splits, baseline, spec, checkpoint_path=path, **kwargs)
    assert len(history["val_loss"]) == 3 and all(v > 0 for v in history["val_loss"])
    assert (model.recognition_net is None) == (family == "gsnn")
    assert load_checkpoint(path)["config"]["family"] == family
    estimates = evaluate(baseline, model, tiny_splits.test, num_samples=4)
    if family == "gsnn":  # MC only: its proposal is its prior
        assert set(estimates) == {"baseline_nll", "cvae_nll_mc"}
    else:
        assert set(estimates) == {"baseline_nll", "cvae_nll_mc", "cvae_nll_is", "cvae_neg_elbo"}
    # a CVAE asked for at the family's path is refused, with the family named
    with pytest.raises(CheckpointMismatchError, match="family"):
        train_cvae(tiny_splits, baseline, tiny_spec, checkpoint_path=path, **kwargs)


def _record(q, family, decoder=False):
    scale = {"cvae": 1.0, "gsnn": 1.1, "hybrid": 0.95}[family]
    record = {
        "num_quadrant_inputs": q, "profile": "full", "seed": 0, "decoder_sees_input": decoder,
        "family": family, "baseline_nll": 100.0 / q, "baseline_nll_stderr": 0.5,
        "cvae_nll_mc": scale * 80.0 / q, "cvae_nll_mc_stderr": 0.5, "num_samples": 100,
        "num_test_images": 10000,
    }  # fmt: skip
    if family != "gsnn":
        record.update(cvae_nll_is=scale * 70.0 / q, cvae_nll_is_stderr=0.4, cvae_neg_elbo=75.0 / q,
                      cvae_neg_elbo_stderr=0.4)  # fmt: skip
    if family == "hybrid":
        record["alpha"] = 0.5
    return record


def test_family_table_rows_columns_and_what_a_gsnn_lacks():
    from cvae_helpers.results import family_table, results_table

    by_family = {f: [_record(q, f) for q in (1, 2, 3)] for f in ("cvae", "gsnn", "hybrid")}
    table = family_table(by_family)
    lines = table.strip().splitlines()
    assert lines[0] == "| negative CLL (nats/image) | 1 quadrant | 2 quadrants | 3 quadrants |"
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in lines[2:]}
    assert list(rows) == ["NN (baseline)", "GSNN (MC)", "CVAE (MC)", "CVAE (IS)", "hybrid (MC)", "hybrid (IS)"]
    assert rows["GSNN (MC)"][0] == "88.00 ± 0.50" and rows["hybrid (IS)"][2].startswith("22.17 ± 0.40")
    assert rows["NN (baseline)"][1] == "50.00 ± 0.50"
    # a missing family shows as dashes, not as an error
    partial = family_table({"cvae": by_family["cvae"]})
    assert "| GSNN (MC) | – | – | – |" in partial
    # a GSNN's own results table has no IS, −ELBO or gap rows
    gsnn_table = results_table(by_family["gsnn"])
    assert "CVAE" not in gsnn_table and "(IS)" not in gsnn_table and "gap" not in gsnn_table
    assert "| GSNN (MC) | 88.00 ± 0.50 |" in gsnn_table
    assert "| hybrid (IS) |" in results_table(by_family["hybrid"]) and "gap: NN − hybrid (IS)" in results_table(
        by_family["hybrid"]
    )


def test_family_reference_is_found_only_when_complete(tmp_path):
    from cvae_helpers.results import load_family_reference, write_results

    for family, sub in (("cvae", ""), ("gsnn", "gsnn"), ("hybrid", "hybrid")):
        for decoder, name in ((False, "p_y_given_z"), (True, "p_y_given_xz")):
            records = [_record(q, family, decoder) for q in (1, 2, 3)]
            if family == "hybrid" and decoder:
                records = records[:2]  # the paper's decoder's hybrid is missing a setting
            write_results(records, tmp_path / sub / name)
    found = load_family_reference(tmp_path)
    assert list(found) == [False]
    assert {f: len(r) for f, r in found[False].items()} == {"cvae": 3, "gsnn": 3, "hybrid": 3}
    assert "Trained as the hybrid, alpha = 0.5" in (tmp_path / "hybrid" / "p_y_given_z" / "results.md").read_text()
    assert load_family_reference(tmp_path / "nothing") == {}


def test_quick_train_of_a_gsnn_from_the_command_line(tmp_path, capsys, monkeypatch):
    import json

    from cvae_helpers import config
    from cvae_helpers.cli import main

    # the quick profile cut down further: the command runs end to end in seconds
    smaller = config.get_profile("quick", train_size=500, val_size=200, test_size=200, max_epochs=1)
    monkeypatch.setitem(config.PROFILES, "quick", smaller)

    out = tmp_path / "out"
    common = [
        "--profile",
        "quick",
        "--quadrants",
        "3",
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        "--no-progress",
    ]
    assert main(["train", "--family", "gsnn", "--output", str(out), *common]) == 0
    record = json.loads((out / "metrics_q3.json").read_text())
    assert record["family"] == "gsnn" and "cvae_nll_is" not in record
    assert record["cvae_nll_mc"] > 0 and "GSNN (MC)" in capsys.readouterr().out
    assert (tmp_path / "ckpt" / "quick" / "q3_seed0" / "gsnn_pyz.pt").is_file()
    assert not (tmp_path / "ckpt" / "quick" / "q3_seed0" / "cvae_pyz.pt").exists()


def test_reference_report_adds_the_four_way_diversity_and_convergence_sections(tmp_path):
    import json

    from cvae_helpers.results import write_results
    from tools.reference_report import write_readme, write_timings

    extra = {"epochs_baseline": 20, "epochs_cvae": 40, "epoch_seconds_baseline": 60.0,
             "epoch_seconds_cvae": 240.0, "eval_seconds": 30.0, "versions": {"torch": "2.14.1"}}  # fmt: skip
    for family, sub in (("cvae", ""), ("gsnn", "gsnn"), ("hybrid", "hybrid")):
        for decoder, name in ((False, "p_y_given_z"), (True, "p_y_given_xz")):
            write_results([{**_record(q, family, decoder), **extra} for q in (1, 2, 3)], tmp_path / sub / name)
    metrics = {k: [0.25, 0.01] for k in ("entropy_bits", "ambiguous", "best_of_1", "best_of_5", "best_of_20")}
    diversity = {"classifier_test_accuracy": 0.9899, "classifier_test_images": 10000, "num_samples": 100,
                 "num_images": 1000, "decoder_sees_input": False,
                 "settings": {"1": {"NN": {**metrics, "confidence": [0.9, 0.0]}}}}  # fmt: skip
    (tmp_path / "diversity.json").write_text(json.dumps(diversity))
    full = {"sample_sizes": [100, 1000, 5000], "mean": [70.3, 70.1, 70.0], "stderr": [0.3, 0.3, 0.3]}
    study = {"device": "cuda (H100)", "settings": {"1": {"full_test_is": full}}}
    (tmp_path / "convergence_p_y_given_z.json").write_text(json.dumps(study))
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "commit_reference-gsnn.txt").write_text("feed123\n")
    (tmp_path / "logs" / "commit_diversity.txt").write_text("beef456\n")
    (tmp_path / "logs" / "time_gsnn_p_y_given_xz.txt").write_text(
        "\tElapsed (wall clock) time (h:mm:ss or m:ss): 10:00.0\n\tMaximum resident set size (kbytes): 1048576\n"
    )
    timings = json.loads(write_timings(tmp_path).read_text())["commands"]
    assert timings == [{"command": "train --profile full --family gsnn --decoder-sees-input",
                        "decoder_sees_input": True, "wall_s": 600.0, "peak_rss_mib": 1024.0}]  # fmt: skip
    text = write_readme(tmp_path, "abc1234").read_text()
    assert "## NN, GSNN, CVAE and hybrid" in text and "`make reference-gsnn` at commit `feed123`" in text
    assert text.count("| GSNN (MC) |") == 2 and "98.99% test accuracy" in text
    assert "`make reference-gsnn` at commit `beef456`, seed 0, fp32. The classifier" in text
    assert "| 1 quadrant | NN | 0.25 ± 0.01 |" in text
    assert "| p(y\\|z) | 1 quadrant | 70.30 ± 0.30 | 70.10 ± 0.30 | 70.00 ± 0.30 | 0.30 |" in text
    assert "`make reference-convergence` at commit `unknown`, seed 0, fp32. Computed on cuda (H100)." in text
