"""The explorer on tiny untrained models and synthetic digits: no training, no MNIST."""

from __future__ import annotations

import base64

import ipywidgets as widgets
import matplotlib.pyplot as plt
import pytest
import torch
from conftest import synthetic_split

from cvae_helpers.config import RunSpec, get_profile
from cvae_helpers.data import QuadrantSplits
from cvae_helpers.explorer import (
    digit_completion_grid,
    figure_png_base64,
    interactive_explorer,
)
from cvae_helpers.models import CVAE, BaselineNet
from cvae_helpers.pipeline import TrainedModels

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NUM_TEST = 12


def tiny_models(q: int) -> TrainedModels:
    torch.manual_seed(q)
    splits = QuadrantSplits(
        q,
        synthetic_split(8, q, 0),
        synthetic_split(8, q, 1),
        synthetic_split(NUM_TEST, q, 2),
    )
    cvae = CVAE(z_dim=4, hidden_1=16, hidden_2=16, baseline=BaselineNet(16, 16))
    history = {"train_loss": [], "val_loss": [], "best_epoch": 0}
    spec = RunSpec.create(q, get_profile("quick"), device="cpu")
    return TrainedModels(spec, splits, cvae.baseline, cvae, history, history, 0.0)


@pytest.fixture(scope="module")
def models_by_q() -> dict[int, TrainedModels]:
    return {q: tiny_models(q) for q in (1, 2, 3)}


def png_of(models, index, num_samples, seed) -> bytes:
    return base64.b64decode(
        figure_png_base64(digit_completion_grid(models, index, num_samples, seed))
    )


def test_digit_completion_grid_rows_and_sample_grid(models_by_q):
    fig = digit_completion_grid(models_by_q[2], index=3, num_samples=10, seed=0)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels == ["input", "truth", "NN", "CVAE 1–8", "CVAE 9–10"]
    assert len(fig.axes) == 5 * 8  # rows of at most 8 samples
    plt.close(fig)
    with pytest.raises(IndexError):
        digit_completion_grid(models_by_q[2], index=NUM_TEST, num_samples=1, seed=0)


def test_digit_completion_grid_is_seeded_and_leaves_global_rng_alone(models_by_q):
    models = models_by_q[1]
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    first = png_of(models, 5, 4, seed=7)
    assert torch.equal(torch.rand(3), before), (
        "digit_completion_grid consumed the global RNG"
    )
    assert png_of(models, 5, 4, seed=7) == first
    assert png_of(models, 5, 4, seed=8) != first
    assert png_of(models, 6, 4, seed=7) != first


def shown_png(explorer) -> str:
    (output,) = explorer.output.outputs
    return output["data"]["image/png"]


def test_widget_has_three_sliders_and_a_button(models_by_q):
    explorer = interactive_explorer(models_by_q, max_index=5)
    assert isinstance(explorer, widgets.VBox)
    sliders = [explorer.quadrants, explorer.digit, explorer.num_samples]
    assert all(isinstance(s, widgets.IntSlider) for s in sliders)
    assert [(s.min, s.max) for s in sliders] == [(1, 3), (0, 5), (1, 16)]
    assert isinstance(explorer.resample, widgets.Button)
    assert isinstance(explorer.output, widgets.Output)
    # all of them are on screen, not only attributes
    shown = {
        id(w)
        for box in explorer.children
        for w in (box.children if isinstance(box, widgets.Box) else (box,))
    }
    assert {id(w) for w in [*sliders, explorer.resample, explorer.output]} <= shown
    assert base64.b64decode(shown_png(explorer)).startswith(PNG_MAGIC)
    assert interactive_explorer(models_by_q).digit.max == NUM_TEST - 1


def test_widget_redraws_on_slider_and_button(models_by_q):
    explorer = interactive_explorer(models_by_q, max_index=5)
    first = shown_png(explorer)
    explorer.resample.click()
    after_click = shown_png(explorer)
    assert explorer.seed == 1 and after_click != first
    explorer.resample.click()
    assert shown_png(explorer) != after_click
    explorer.quadrants.value = 3
    on_three = shown_png(explorer)
    assert on_three != after_click
    explorer.digit.value = 4
    assert shown_png(explorer) != on_three
    # what is shown is exactly the figure of the current setting
    expected = png_of(models_by_q[3], 4, explorer.num_samples.value, explorer.seed)
    assert base64.b64decode(shown_png(explorer)) == expected


def test_widget_rejects_gaps_in_the_quadrant_settings(models_by_q):
    with pytest.raises(ValueError):
        interactive_explorer({1: models_by_q[1], 3: models_by_q[3]})
