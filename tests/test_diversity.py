"""Diversity metrics on hand-built labels with known answers, the classifier's cache,
and the zero-diversity baseline."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from cvae_helpers.checkpoints import CheckpointMismatchError
from cvae_helpers.classifier import DigitClassifier, classifier_path, get_classifier
from cvae_helpers.config import get_profile
from cvae_helpers.diversity import (
    completions,
    diversity_metrics,
    entropy_bits_of,
    identity_switches,
    label_shares,
    measure_diversity,
    prior_spread,
)
from cvae_helpers.models import CVAE, MIN_SCALE, BaselineNet


def _hand_built_labels() -> tuple[torch.Tensor, torch.Tensor]:
    """20 samples of three inputs: all 3s (truth 3); ten 5s then ten 3s (truth 3);
    eighteen 7s with a 9 at sample 4 and a 1 at sample 20 (truth 9)."""
    a = torch.full((20,), 3)
    b = torch.tensor([5] * 10 + [3] * 10)
    c = torch.full((20,), 7)
    c[3], c[19] = 9, 1
    return torch.stack([a, b, c], dim=1), torch.tensor([3, 3, 9])


def test_diversity_metrics_on_a_hand_built_case():
    labels, truth = _hand_built_labels()
    metrics = diversity_metrics(labels, truth)
    third = -(0.9 * math.log2(0.9) + 2 * 0.05 * math.log2(0.05))  # ≈ 0.569 bits
    assert torch.allclose(
        metrics["entropy_bits"], torch.tensor([0.0, 1.0, third], dtype=torch.float64)
    )
    assert metrics["ambiguous"].tolist() == [0.0, 1.0, 0.0]  # 5%-shares do not count
    assert metrics["best_of_1"].tolist() == [1.0, 0.0, 0.0]
    assert metrics["best_of_5"].tolist() == [
        1.0,
        0.0,
        1.0,
    ]  # the 9 is the fourth sample
    assert metrics["best_of_20"].tolist() == [1.0, 1.0, 1.0]
    assert entropy_bits_of([0.9, 0.05, 0.05]) == pytest.approx(third)
    assert label_shares(labels)[1, [3, 5]].tolist() == [0.5, 0.5]


def test_ambiguous_at_exactly_ten_percent_and_too_few_samples():
    labels = torch.tensor([4] * 18 + [9] * 2).reshape(20, 1)  # 90% / 10%
    assert diversity_metrics(labels, torch.tensor([4]))["ambiguous"].item() == 1.0
    with pytest.raises(ValueError, match="best-of-20 needs at least 20 samples"):
        diversity_metrics(labels[:10], torch.tensor([4]))


def test_identity_switches_are_chosen_by_the_measurement():
    labels, _ = _hand_built_labels()
    (switch,) = identity_switches(labels, count=5)  # only the second input splits
    index, first, second, first_share, second_share = switch
    assert (
        index == 1 and {first, second} == {3, 5} and first_share == second_share == 0.5
    )
    more = torch.cat([labels, torch.tensor([4] * 14 + [9] * 6).reshape(20, 1)], dim=1)
    assert [s[0] for s in identity_switches(more, count=5)] == [
        1,
        3,
    ]  # 50/50 before 70/30
    assert [(s[1], s[2]) for s in identity_switches(more, count=5)][1] == (4, 9)


class _Constant(torch.nn.Module):
    """A 'classifier' that calls an image 7 when its mean is above 0.5, else 1."""

    def forward(self, images):
        logits = torch.zeros(images.reshape(-1, 784).shape[0], 10)
        bright = images.reshape(-1, 784).mean(-1) > 0.5
        logits[bright, 7], logits[~bright, 1] = 5.0, 5.0
        return logits


def test_the_baseline_has_zero_diversity_and_a_cvae_samples_many(tiny_splits):
    torch.manual_seed(0)
    split = tiny_splits.test.take(slice(0, 6))
    baseline = BaselineNet(16, 16)
    images = completions(baseline, split.inputs, 20)
    assert images.shape == (20, 6, 784) and torch.equal(images[0], images[19])
    given = split.inputs.reshape(6, 784) != -1
    assert torch.equal(images[3][given], split.inputs.reshape(6, 784)[given])
    metrics, labels = measure_diversity(baseline, _Constant(), split, num_samples=20)
    assert labels.shape == (20, 6) and metrics["entropy_bits"].abs().max() == 0
    assert (
        metrics["confidence"].shape == (6,) and 0.1 < metrics["confidence"].min() <= 1
    )
    cvae = CVAE(z_dim=4, hidden_1=16, hidden_2=16)
    first = completions(cvae, split.inputs, 20, torch.Generator().manual_seed(1))
    again = completions(cvae, split.inputs, 20, torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and not torch.equal(first[0], first[1])
    assert "prior_scale" not in metrics  # the baseline has no latent code
    metrics, _ = measure_diversity(
        cvae, _Constant(), split, num_samples=20, batch_size=4
    )
    _, scale = cvae.prior(split.inputs.reshape(6, 784))
    assert torch.allclose(metrics["prior_scale"], scale.double().mean(-1))
    assert metrics["prior_scale"].shape == (6,) and metrics["prior_scale"].min() > 0


def test_a_point_mass_prior_has_zero_spread_and_identical_completions(tiny_splits):
    split = tiny_splits.test.take(slice(0, 5))
    cvae = CVAE(z_dim=4, hidden_1=16, hidden_2=16)
    with (
        torch.no_grad()
    ):  # the prior network's scale head pushed far down: sigma -> its floor
        cvae.prior_net.head.bias[4:] = -60.0
        cvae.prior_net.head.weight[4:] = 0.0
    assert torch.allclose(
        prior_spread(cvae, split.inputs),
        torch.full((5,), MIN_SCALE, dtype=torch.float64),
    )
    images = completions(cvae, split.inputs, 10, torch.Generator().manual_seed(0))
    assert torch.allclose(images[0], images[9], atol=1e-3)


def test_classifier_is_trained_once_cached_and_refuses_another_configuration(tiny_spec):
    spec = replace(
        tiny_spec,
        profile=get_profile(
            "quick", max_epochs=2, train_size=1000, test_size=500, batch_size=32
        ),
    )
    trained = get_classifier(spec, progress=False)
    assert classifier_path(spec).is_file() and len(trained.history["val_loss"]) == 2
    assert trained.test_accuracy > 0.5  # ten classes: chance is 0.1
    assert trained.num_test_images == 500
    again = get_classifier(spec, progress=False)
    assert (
        again.history == trained.history
        and again.test_accuracy == trained.test_accuracy
    )
    # another budget under the same name is refused, with the difference named
    other = replace(
        spec,
        profile=get_profile(
            "quick", max_epochs=3, train_size=1000, test_size=500, batch_size=32
        ),
    )
    with pytest.raises(CheckpointMismatchError, match="max_epochs"):
        get_classifier(other, progress=False)
    assert DigitClassifier()(torch.rand(3, 28, 28)).shape == (3, 10)
