"""Estimators against S, the convergence record and figure, and the diversity and
convergence commands at the quick budget."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pytest
import torch

from cvae_helpers.config import set_seed
from cvae_helpers.convergence import convergence_curve
from cvae_helpers.evaluation import (
    cvae_nll_is,
    cvae_nll_mc,
    estimates_against_samples,
    evaluate,
)
from cvae_helpers.models import CVAE, BaselineNet
from cvae_helpers.pipeline import TrainedModels
from cvae_helpers.plotting import plot_convergence
from cvae_helpers.results import convergence_table, diversity_table


def _models(tiny_splits, tiny_spec) -> TrainedModels:
    set_seed(0)
    cvae = CVAE(z_dim=4, hidden_1=16, hidden_2=16).eval()
    return TrainedModels(tiny_spec, tiny_splits, BaselineNet(16, 16), cvae, {}, {}, 0.0)


def test_estimates_against_samples_are_prefixes_of_the_package_estimators(tiny_splits):
    set_seed(0)
    cvae = CVAE(z_dim=4, hidden_1=16, hidden_2=16).eval()
    split = tiny_splits.test.take(slice(0, 10))
    set_seed(3)
    values = estimates_against_samples(
        cvae, split, [1, 4, 16], ("mc", "is", "neg_elbo")
    )
    assert {k: v.shape for k, v in values.items()} == {
        k: (3, 10) for k in ("mc", "is", "neg_elbo")
    }
    # IS draws first, then MC: the same seed gives the package's estimators at the
    # largest S
    set_seed(3)
    assert torch.allclose(
        values["is"][-1], cvae_nll_is(cvae, split.inputs, split.targets, 16), atol=1e-4
    )
    set_seed(3)
    only_mc = estimates_against_samples(cvae, split, [16], ("mc",))["mc"][0]
    set_seed(3)
    assert torch.allclose(
        only_mc, cvae_nll_mc(cvae, split.inputs, split.targets, 16), atol=1e-4
    )
    # evaluate() is the same computation at one S, with the same draws
    baseline = BaselineNet(16, 16)
    set_seed(3)
    evaluated = evaluate(baseline, cvae, split, 16)
    set_seed(3)
    at_16 = estimates_against_samples(cvae, split, [16])
    for name in ("mc", "is", "neg_elbo"):
        assert evaluated[name].mean == pytest.approx(
            at_16[name][0].double().mean().item(), abs=1e-9
        )
    # one sample: IS and −ELBO are the same number; more samples: IS never above −ELBO
    # (Jensen)
    assert torch.allclose(values["is"][0], values["neg_elbo"][0])
    assert (values["is"][1:] <= values["neg_elbo"][1:] + 1e-4).all()
    with pytest.raises(ValueError, match="Unknown estimators"):
        estimates_against_samples(cvae, split, [1], ("exact",))


def test_convergence_curve_record_and_figure(tiny_splits, tiny_spec):
    curve = convergence_curve(_models(tiny_splits, tiny_spec), [1, 2, 8], num_images=12)
    assert curve["num_images"] == 12 and curve["sample_sizes"] == [1, 2, 8]
    assert set(curve["estimators"]) == {"mc", "is", "neg_elbo"}
    is_curve = curve["estimators"]["is"]
    assert is_curve["minus_best_is_mean"][-1] == 0.0 and len(is_curve["stderr"]) == 3
    fig = plot_convergence(curve)
    assert len(fig.axes) == 2 and fig.axes[0].get_xscale() == "log"
    plt.close(fig)


def test_the_estimators_score_in_chunks_without_changing_a_number(
    tiny_splits, tiny_spec, monkeypatch
):
    """log_weights draws every z first and scores a few samples at a time: the curve is
    the same, bit for bit, whether one sample or all of them make a chunk."""
    from cvae_helpers import evaluation

    models = _models(tiny_splits, tiny_spec)
    curves = []
    for rows in (1, 10**6):
        monkeypatch.setattr(evaluation, "CHUNK_ROWS", rows)
        curves.append(convergence_curve(models, [1, 2, 8], num_images=12))
    assert curves[0] == curves[1]


def test_diversity_and_convergence_tables():
    metrics = {
        k: [0.5, 0.01]
        for k in ("entropy_bits", "ambiguous", "best_of_1", "best_of_5", "best_of_20")
    }
    study = {
        "settings": {
            "1": {
                "NN": {**metrics, "confidence": [0.9, 0.01]},
                "CVAE": {
                    **metrics,
                    "confidence": [0.8, 0.0],
                    "prior_scale": [0.7023, 0.001],
                },
            }
        }
    }
    table = diversity_table(study)
    assert (
        "| 1 quadrant | CVAE | 0.50 ± 0.01 | 50.0 ± 1.0 |" in table
        and table.count("\n") == 4
    )
    assert "| 80.0 ± 0.0 | 0.702 ± 0.001 |" in table and "| 90.0 ± 1.0 | – |" in table
    full = {"sample_sizes": [100, 1000], "mean": [70.0, 69.5], "stderr": [0.3, 0.3]}
    studies = {False: {"settings": {"2": {"full_test_is": full}}}}
    table = convergence_table(studies)
    assert (
        "IS, S = 1,000" in table
        and "| p(y\\|z) | 2 quadrants | 70.00 ± 0.30 | 69.50 ± 0.30 | 0.50 |" in table
    )


def _smaller_quick_budget(monkeypatch):
    """The quick profile cut down further, so that the commands run end to end in
    seconds."""
    from cvae_helpers import config

    smaller = config.get_profile(
        "quick", train_size=500, val_size=200, test_size=200, max_epochs=1
    )
    monkeypatch.setitem(config.PROFILES, "quick", smaller)


def test_diversity_and_convergence_commands_at_the_quick_budget(tmp_path, monkeypatch):
    from cvae_helpers.cli import main

    _smaller_quick_budget(monkeypatch)

    common = [
        "--profile",
        "quick",
        "--quadrants",
        "3",
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
    ]
    out = tmp_path / "convergence.json"
    assert main(["convergence", "--output", str(out), "--sizes", "1", "4", "--images", "20",
                 "--full-test-sizes", "2", "4", *common]) == 0  # fmt: skip
    study = json.loads(out.read_text())
    setting = study["settings"]["3"]
    assert (
        setting["curve"]["num_images"] == 20
        and setting["full_test_is"]["num_images"] == 200
    )
    assert setting["full_test_is"]["sample_sizes"] == [2, 4] and "versions" in study
    out = tmp_path / "diversity.json"
    assert main(["diversity", "--output", str(out), "--images", "30", *common]) == 0
    study = json.loads(out.read_text())
    assert list(study["settings"]["3"]) == ["NN", "GSNN", "CVAE", "hybrid"]
    assert study["num_images"] == 30 and study["num_samples"] == 100
    assert (
        study["settings"]["3"]["NN"]["entropy_bits"][0] == 0.0
    )  # one guess, one label
    assert 0 < study["classifier_test_accuracy"] <= 1
