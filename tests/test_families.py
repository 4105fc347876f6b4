"""The three families: their objects, and the GSNN's and hybrid's losses, where Pyro's
losses (Trace_ELBO with the GSNN guide, HybridELBO), the training step's loss and a
hand computation with fixed noise all give the same number (the step's gradients:
tests/test_training.py)."""

from __future__ import annotations

import math
from dataclasses import replace

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO

from cvae_helpers.config import RunSpec, set_seed
from cvae_helpers.data import mask_quadrants
from cvae_helpers.families import CVAE as CVAE_FAMILY
from cvae_helpers.families import (
    DEFAULT_ALPHA,
    FAMILIES,
    GSNN,
    HYBRID,
    Family,
    HybridELBO,
    get_family,
)
from cvae_helpers.models import CVAE
from cvae_helpers.training import make_steps


def _step_loss(model, family, alpha=DEFAULT_ALPHA):
    """The loss the training step of ``family`` takes its gradient of."""
    spec = RunSpec.create(2, "quick", device="cpu").with_family(family, alpha)
    return make_steps(model, spec).loss


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
    return (
        -0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)
    ).sum(-1)


def _seeded(seed, compute):
    pyro.clear_param_store()
    set_seed(seed)
    with torch.no_grad():
        return compute()


def test_the_family_objects():
    assert (
        FAMILIES == {"cvae": CVAE_FAMILY, "gsnn": GSNN, "hybrid": HYBRID}
        and DEFAULT_ALPHA == 0.5
    )
    assert [(f.name, f.label, f.article) for f in FAMILIES.values()] == [
        ("cvae", "CVAE", "a CVAE"),
        ("gsnn", "GSNN", "a GSNN"),
        ("hybrid", "hybrid", "the hybrid"),
    ]
    assert get_family("gsnn") is GSNN and get_family(HYBRID) is HYBRID
    unknown = r"Unknown model family 'vae'; choose one of \('cvae', 'gsnn', 'hybrid'\)"
    with pytest.raises(ValueError, match=unknown):
        get_family("vae")
    assert (CVAE_FAMILY.recognition, GSNN.recognition, HYBRID.recognition) == (
        True,
        False,
        True,
    )
    assert CVAE_FAMILY.estimators == HYBRID.estimators == (
        "mc",
        "is",
        "neg_elbo",
    ) and GSNN.estimators == ("mc",)
    # the guide SVI pairs with the model, and the loss it minimises
    cvae = CVAE(z_dim=4, hidden_1=8, hidden_2=8)
    assert CVAE_FAMILY.guide(cvae) == cvae.guide and HYBRID.guide(cvae) == cvae.guide
    assert GSNN.guide(cvae) == cvae.gsnn_guide
    assert isinstance(CVAE_FAMILY.svi_loss(cvae), Trace_ELBO)
    assert isinstance(GSNN.svi_loss(cvae), Trace_ELBO)
    hybrid = HYBRID.with_alpha(0.3).svi_loss(cvae)
    assert (
        isinstance(hybrid, HybridELBO)
        and hybrid.alpha == 0.3
        and hybrid.gsnn_guide == cvae.gsnn_guide
    )
    assert isinstance(CVAE_FAMILY, Family)


@pytest.mark.parametrize("sees_input", [False, True])
def test_gsnn_loss_equals_a_hand_computation_with_fixed_noise(sees_input):
    set_seed(0)
    gsnn = CVAE(
        z_dim=6,
        hidden_1=16,
        hidden_2=12,
        decoder_sees_input=sees_input,
        recognition=False,
    )
    xs, ys = _batch()
    y_hat = torch.rand(5, 784)
    stepped = _seeded(3, lambda: _step_loss(gsnn, GSNN)(xs, ys, y_hat))
    elbo = GSNN.svi_loss(gsnn)
    pyros = _seeded(
        3, lambda: elbo.differentiable_loss(gsnn.model, GSNN.guide(gsnn), xs, ys, y_hat)
    )
    set_seed(3)
    noise = torch.randn(5, 6)
    with torch.no_grad():
        loc, scale = gsnn.prior(xs, y_hat)
        z = loc + scale * noise  # the reparameterised draw from p(z|x)
        expected = _bernoulli_nll(gsnn.generation_net(z, xs), xs, ys).sum()
    for loss in (stepped, pyros):
        assert torch.allclose(loss.double(), expected, rtol=1e-5), (loss, expected)
    assert gsnn.recognition_net is None


@pytest.mark.parametrize("alpha", [0.5, 0.2])
def test_hybrid_loss_equals_a_hand_computation_with_fixed_noise(alpha):
    set_seed(0)
    model = CVAE(z_dim=6, hidden_1=16, hidden_2=12, decoder_sees_input=True)
    xs, ys = _batch(q=1)
    y_hat = torch.rand(5, 784)
    stepped = _seeded(4, lambda: _step_loss(model, HYBRID, alpha)(xs, ys, y_hat))
    pyros = _seeded(
        4,
        lambda: HybridELBO(model.gsnn_guide, alpha)(
            model.model, model.guide, xs, ys, y_hat
        ),
    )
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
    for loss in (stepped, pyros):
        assert torch.allclose(loss.double(), expected, rtol=1e-5), (loss, expected)
    # and the weighting matters: the two terms differ
    assert not torch.allclose(cvae_term, gsnn_term)
    # the CVAE's own loss is the first term, with the same first draw
    cvae_only = _seeded(
        4,
        lambda: Trace_ELBO().differentiable_loss(
            model.model, model.guide, xs, ys, y_hat
        ),
    )
    assert torch.allclose(cvae_only.double(), cvae_term, rtol=1e-5)
    assert torch.allclose(
        _seeded(4, lambda: _step_loss(model, CVAE_FAMILY)(xs, ys, y_hat)).double(),
        cvae_term,
        rtol=1e-5,
    )


def test_gsnn_guide_samples_from_the_prior_network():
    set_seed(0)
    gsnn = CVAE(z_dim=4, hidden_1=16, hidden_2=12, recognition=False)
    xs, ys = _batch()
    trace = poutine.trace(gsnn.gsnn_guide).get_trace(xs, ys)
    site = trace.nodes["z"]
    loc, scale = gsnn.prior(xs)
    assert site["fn"].base_dist.loc.shape == (5, 4)
    assert torch.allclose(site["fn"].base_dist.loc, loc) and torch.allclose(
        site["fn"].base_dist.scale, scale
    )
    assert site["value"].requires_grad  # reparameterised: the gradient flows through z


def test_a_gsnn_has_no_posterior_to_ask_for():
    gsnn = CVAE(z_dim=4, hidden_1=8, hidden_2=8, recognition=False)
    xs, ys = _batch()
    with pytest.raises(ValueError, match="no recognition network"):
        gsnn.posterior(xs, ys)


def test_the_cache_keys_name_the_family_and_the_hybrids_weight(tiny_spec):
    """Every CVAE-family key names its family; the hybrid's adds its weight; each family
    has its own file, and a hybrid weight other than the default its own too."""
    from cvae_helpers.pipeline import cached_models
    from cvae_helpers.training import cvae_config

    cvae_key = cvae_config(tiny_spec, {"b": 1})
    assert set(cvae_key) == {
        "model",
        "family",
        "num_quadrant_inputs",
        "seed",
        "z_dim",
        "hidden_1",
        "hidden_2",
        "decoder_sees_input",
        "precision",
        "profile",
        "baseline",
    }
    assert (
        cvae_key["family"] == "cvae"
        and cvae_key["model"] == "cvae"
        and cvae_key["baseline"] == {"b": 1}
    )
    assert (
        cvae_key["z_dim"] == 200
        and cvae_key["hidden_1"] == tiny_spec.profile.training.hidden_units
        and cvae_key["profile"] == tiny_spec.profile.training_dict()
    )
    gsnn_key = cvae_config(tiny_spec.with_family("gsnn"), {"b": 1})
    hybrid_key = cvae_config(tiny_spec.with_family("hybrid", alpha=0.25), {"b": 1})
    assert (
        gsnn_key["family"] == "gsnn"
        and "alpha" not in gsnn_key
        and "alpha" not in cvae_key
    )
    assert hybrid_key["family"] == "hybrid" and hybrid_key["alpha"] == 0.25
    assert set(hybrid_key) == set(cvae_key) | {"alpha"}
    # the device says where a model trains, not what it is: not part of the key
    assert cvae_config(replace(tiny_spec, device="meta"), {"b": 1}) == cvae_key
    names = {
        spec.family.tag: cached_models(spec)[1].path.name
        for spec in (
            tiny_spec,
            tiny_spec.with_family("gsnn"),
            tiny_spec.with_family("hybrid"),
            tiny_spec.with_family("hybrid", alpha=0.25).with_decoder(True),
        )
    }
    assert names == {
        "cvae": "cvae_pyz.pt",
        "gsnn": "gsnn_pyz.pt",
        "hybrid": "hybrid_pyz.pt",
        "hybrid_a0.25": "hybrid_a0.25_pyxz.pt",
    }
    with pytest.raises(ValueError, match="Unknown model family"):
        tiny_spec.with_family("vae")
    with pytest.raises(ValueError, match="alpha"):
        tiny_spec.with_family("hybrid", alpha=1.5)


@pytest.mark.parametrize("family", ["gsnn", "hybrid"])
def test_families_train_with_early_stopping_and_are_evaluated(
    tiny_splits, tiny_spec, family, tmp_path
):
    from cvae_helpers.checkpoints import CheckpointMismatchError, load_checkpoint
    from cvae_helpers.evaluation import evaluate
    from cvae_helpers.training import train_baseline, train_cvae

    spec = tiny_spec.with_family(family)
    baseline, _ = train_baseline(tiny_splits, spec, progress=False)
    path = tmp_path / f"{family}.pt"
    model, history = train_cvae(
        tiny_splits, baseline, spec, checkpoint_path=path, progress=False
    )
    assert len(history["val_loss"]) == 3 and all(v > 0 for v in history["val_loss"])
    assert (
        history["trained_with"]
        == [f"{type(spec.family.svi_loss(model)).__name__}, one Adam"] * 3
    )
    assert (model.recognition_net is None) == (family == "gsnn")
    assert load_checkpoint(path)["config"]["family"] == family
    estimates = evaluate(baseline, model, tiny_splits.test, num_samples=4)
    if family == "gsnn":  # MC only: its proposal is its prior
        assert set(estimates) == {"baseline_nll", "mc"}
    else:
        assert set(estimates) == {"baseline_nll", "mc", "is", "neg_elbo"}
    # a CVAE asked for at the family's path is refused, with the family named
    with pytest.raises(CheckpointMismatchError, match="family"):
        train_cvae(
            tiny_splits, baseline, tiny_spec, checkpoint_path=path, progress=False
        )


def _record(q, family, decoder=False):
    scale = {"cvae": 1.0, "gsnn": 1.1, "hybrid": 0.95}[family]
    record = {
        "num_quadrant_inputs": q, "profile": "full", "seed": 0, "decoder_sees_input": decoder,
        "family": family, "baseline_nll": 100.0 / q, "baseline_nll_stderr": 0.5,
        f"{family}_nll_mc": scale * 80.0 / q, f"{family}_nll_mc_stderr": 0.5, "num_samples": 100,
        "num_test_images": 10000,
    }  # fmt: skip
    if family != "gsnn":  # named after the family, as metrics_record names them
        record.update({f"{family}_nll_is": scale * 70.0 / q, f"{family}_nll_is_stderr": 0.4,
                       f"{family}_neg_elbo": 75.0 / q, f"{family}_neg_elbo_stderr": 0.4})  # fmt: skip
    if family == "hybrid":
        record["alpha"] = 0.5
    return record


def test_family_table_rows_columns_and_what_a_gsnn_lacks():
    from cvae_helpers.results import family_table, results_table

    by_family = {
        f: [_record(q, f) for q in (1, 2, 3)] for f in ("cvae", "gsnn", "hybrid")
    }
    table = family_table(by_family)
    lines = table.strip().splitlines()
    assert (
        lines[0]
        == "| negative CLL (nats/image) | 1 quadrant | 2 quadrants | 3 quadrants |"
    )
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in lines[2:]
    }
    assert list(rows) == [
        "NN (baseline)",
        "GSNN (MC)",
        "CVAE (MC)",
        "CVAE (IS)",
        "hybrid (MC)",
        "hybrid (IS)",
    ]
    assert rows["GSNN (MC)"][0] == "88.00 ± 0.50" and rows["hybrid (IS)"][2].startswith(
        "22.17 ± 0.40"
    )
    assert rows["NN (baseline)"][1] == "50.00 ± 0.50"
    # a missing family shows as dashes, not as an error
    partial = family_table({"cvae": by_family["cvae"]})
    assert "| GSNN (MC) | – | – | – |" in partial
    # a GSNN's own results table has no IS, −ELBO or gap rows
    gsnn_table = results_table(by_family["gsnn"])
    assert (
        "CVAE" not in gsnn_table
        and "(IS)" not in gsnn_table
        and "gap" not in gsnn_table
    )
    assert "| GSNN (MC) | 88.00 ± 0.50 |" in gsnn_table
    assert "| hybrid (IS) |" in results_table(
        by_family["hybrid"]
    ) and "gap: NN − hybrid (IS)" in results_table(by_family["hybrid"])


def test_family_reference_is_found_only_when_complete(tmp_path):
    from cvae_helpers.results import load_family_reference, write_results

    for family, sub in (("cvae", ""), ("gsnn", "gsnn"), ("hybrid", "hybrid")):
        for decoder, name in ((False, "p_y_given_z"), (True, "p_y_given_xz")):
            records = [_record(q, family, decoder) for q in (1, 2, 3)]
            if family == "hybrid" and decoder:
                records = records[
                    :2
                ]  # the paper's decoder's hybrid is missing a setting
            write_results(records, tmp_path / sub / name)
    found = load_family_reference(tmp_path)
    assert list(found) == [False]
    assert {f: len(r) for f, r in found[False].items()} == {
        "cvae": 3,
        "gsnn": 3,
        "hybrid": 3,
    }
    assert (
        "Trained as the hybrid, alpha = 0.5"
        in (tmp_path / "hybrid" / "p_y_given_z" / "results.md").read_text()
    )
    assert load_family_reference(tmp_path / "nothing") == {}


def test_quick_train_of_a_gsnn_from_the_command_line(tmp_path, capsys, monkeypatch):
    import json

    from cvae_helpers import config
    from cvae_helpers.cli import main

    # the quick profile cut down further: the command runs end to end in seconds
    smaller = config.get_profile(
        "quick", train_size=500, val_size=200, test_size=200, max_epochs=1
    )
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
    assert record["family"] == "gsnn" and not any(
        key.startswith("cvae_") for key in record
    )
    assert record["gsnn_nll_mc"] > 0 and "gsnn_nll_is" not in record
    assert "GSNN (MC)" in capsys.readouterr().out
    assert (tmp_path / "ckpt" / "quick" / "q3_seed0" / "gsnn_pyz.pt").is_file()
    assert not (tmp_path / "ckpt" / "quick" / "q3_seed0" / "cvae_pyz.pt").exists()


def test_reference_report_adds_the_four_way_diversity_and_convergence_sections(
    tmp_path,
):
    import json

    from cvae_helpers.results import write_results
    from tools.reference_report import write_readme, write_timings

    extra = {"epochs_baseline": 20, "epochs_cvae": 40, "epoch_seconds_baseline": 60.0,
             "epoch_seconds_cvae": 240.0, "eval_seconds": 30.0, "versions": {"torch": "2.14.1"}}  # fmt: skip
    for family, sub in (("cvae", ""), ("gsnn", "gsnn"), ("hybrid", "hybrid")):
        for decoder, name in ((False, "p_y_given_z"), (True, "p_y_given_xz")):
            write_results(
                [{**_record(q, family, decoder), **extra} for q in (1, 2, 3)],
                tmp_path / sub / name,
            )
    metrics = {
        k: [0.25, 0.01]
        for k in ("entropy_bits", "ambiguous", "best_of_1", "best_of_5", "best_of_20")
    }
    diversity = {"classifier_test_accuracy": 0.9899, "classifier_test_images": 10000, "num_samples": 100,
                 "num_images": 1000, "decoder_sees_input": False,
                 "settings": {"1": {"NN": {**metrics, "confidence": [0.9, 0.0]}}}}  # fmt: skip
    (tmp_path / "diversity.json").write_text(json.dumps(diversity))
    full = {
        "sample_sizes": [100, 1000, 5000],
        "mean": [70.3, 70.1, 70.0],
        "stderr": [0.3, 0.3, 0.3],
    }
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
    assert (
        "## NN, GSNN, CVAE and hybrid" in text
        and "`make reference-gsnn` at commit `feed123`" in text
    )
    assert text.count("| GSNN (MC) |") == 2 and "98.99% test accuracy" in text
    assert (
        "`make reference-gsnn` at commit `beef456`, seed 0, fp32. The classifier"
        in text
    )
    assert "| 1 quadrant | NN | 0.25 ± 0.01 |" in text
    assert (
        "| p(y\\|z) | 1 quadrant | 70.30 ± 0.30 | 70.10 ± 0.30 | 70.00 ± 0.30 | 0.30 |"
        in text
    )
    assert (
        "`make reference-convergence` at commit `unknown`, seed 0, fp32. Computed on cuda (H100)."
        in text
    )
