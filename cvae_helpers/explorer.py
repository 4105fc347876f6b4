"""The live explorer: completions of one test digit, drawn by the Python kernel
(:mod:`cvae_helpers.browser_explorer` is the one that runs in the reader's browser).

:func:`digit_completion_grid` draws input / truth / baseline / CVAE samples for one test
digit; :func:`interactive_explorer` wraps it in sliders and a "Resample" button. The
latent noise comes from a private ``torch.Generator`` seeded by ``seed``: the same
``(index, num_samples, seed)`` gives the same picture; the global state is untouched.
"""

from __future__ import annotations

from collections.abc import Mapping

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch

from .data import quadrant_label
from .pipeline import TrainedModels
from .plotting import completion_rows, figure_to_data_uri, show_digits

# CVAE samples are laid out in rows of at most this many digits.
SAMPLES_PER_ROW = 8
PNG_PREFIX = "data:image/png;base64,"


@torch.no_grad()
def digit_completion_grid(
    models: TrainedModels, index: int, num_samples: int = 8, seed: int = 0
) -> plt.Figure:
    """Input, truth, the baseline's guess and ``num_samples`` CVAE completions
    of one test digit.

    Args:
        models: the trained models of one quadrant setting;
            ``models.splits.test.inputs`` is ``(N, 28, 28)`` with -1 on the
            hidden pixels.
        index: position of the digit in the test split, ``0 <= index < N``.
        num_samples: how many CVAE completions to draw (rows of up to 8).
        seed: seeds the standard-normal noise ``(num_samples, 1, z_dim)`` of
            the latent draws.

    Returns:
        The figure (not shown, not closed); rows "input", "truth", "NN", then
        "CVAE i–j".
    """
    test = models.splits.test
    if not 0 <= index < len(test):
        raise IndexError(
            f"no test digit {index}: the test split holds {len(test)} digits.",
        )
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}.")
    device = next(models.cvae.parameters()).device
    inputs = test.inputs[index : index + 1]  # (1, 28, 28)
    targets = test.targets[index : index + 1]
    baseline_probs = models.baseline(inputs.to(device)).cpu()  # (1, 784)
    generator = torch.Generator().manual_seed(seed)
    noise = models.cvae.latent_noise(num_samples, 1, generator)
    # (num_samples, 1, 784)
    samples = models.cvae.sample(inputs.to(device), noise=noise).cpu()
    rows = completion_rows(inputs.cpu(), targets.cpu(), baseline_probs, samples)
    fixed, sample_rows = rows[:3], rows[3:]
    for start in range(0, num_samples, SAMPLES_PER_ROW):
        chunk = sample_rows[start : start + SAMPLES_PER_ROW]
        stop = start + len(chunk)
        label = f"CVAE {start + 1}"
        if len(chunk) > 1:
            label += f"–{stop}"
        fixed.append((label, torch.cat([images for _, images in chunk])))
    fig = show_digits(fixed)
    fig.suptitle(
        f"{quadrant_label(models.spec.num_quadrant_inputs)}, test #{index} "
        f"({int(test.labels[index])}), seed {seed}",
        fontsize=9,
    )
    return fig


def figure_png_base64(fig: plt.Figure, dpi: int = 72) -> str:
    """The PNG of ``fig`` as base64 text (closes the figure)."""
    return figure_to_data_uri(fig, dpi=dpi).removeprefix(PNG_PREFIX)


def _check_quadrants(models_by_q: Mapping[int, TrainedModels]) -> list[int]:
    quadrants = sorted(models_by_q)
    if not quadrants or quadrants != list(range(quadrants[0], quadrants[-1] + 1)):
        raise ValueError(
            f"models_by_q needs consecutive quadrant settings, got {quadrants}."
        )
    return quadrants


class CompletionExplorer(widgets.VBox):
    """Sliders (quadrants, test digit, samples), a "Resample" button and the figure.

    Attributes: ``quadrants``, ``digit``, ``num_samples`` (IntSliders), ``resample``
    (Button), ``output`` (Output holding one PNG), ``seed`` (the seed of the picture
    shown).
    """

    def __init__(
        self,
        models_by_q: Mapping[int, TrainedModels],
        max_index: int,
        seed: int,
        dpi: int,
    ) -> None:
        quadrants = _check_quadrants(models_by_q)
        self.models_by_q, self.seed, self.dpi = dict(models_by_q), seed, dpi
        common = {"continuous_update": False, "style": {"description_width": "initial"}}
        self.quadrants = widgets.IntSlider(
            value=quadrants[0],
            min=quadrants[0],
            max=quadrants[-1],
            description="quadrants given",
            **common,
        )
        self.digit = widgets.IntSlider(
            value=0, min=0, max=max_index, description="test digit", **common
        )
        self.num_samples = widgets.IntSlider(
            value=8, min=1, max=16, description="CVAE samples", **common
        )
        self.resample = widgets.Button(
            description="Resample",
            icon="refresh",
            tooltip="draw new CVAE samples (a new seed)",
        )
        self.output = widgets.Output()
        for slider in (self.quadrants, self.digit, self.num_samples):
            slider.observe(self.redraw, names="value")
        self.resample.on_click(self._on_resample)
        controls = widgets.HBox([self.quadrants, self.digit])
        super().__init__(
            [controls, widgets.HBox([self.num_samples, self.resample]), self.output]
        )
        self.redraw()

    def _on_resample(self, _button=None) -> None:
        self.seed += 1
        self.redraw()

    def redraw(self, _change=None) -> None:
        """Draw the current setting into ``output``."""
        models = self.models_by_q[self.quadrants.value]
        fig = digit_completion_grid(
            models, self.digit.value, self.num_samples.value, self.seed
        )
        png = figure_png_base64(fig, dpi=self.dpi)
        # One assignment of the synced ``outputs`` trait: it replaces the picture at
        # once in Jupyter and Colab, and also works where no kernel captures output
        # (tests).
        self.output.outputs = (
            {
                "output_type": "display_data",
                "data": {
                    "image/png": png,
                    "text/plain": f"<completions, {self.quadrants.value} quadrants, "
                    f"test digit {self.digit.value}, seed {self.seed}>",
                },
                "metadata": {},
            },
        )


def interactive_explorer(
    models_by_q: Mapping[int, TrainedModels],
    max_index: int | None = None,
    *,
    seed: int = 0,
    dpi: int = 72,
) -> CompletionExplorer:
    """A live ipywidgets :class:`CompletionExplorer`; needs a running kernel (Jupyter,
    Colab, Binder).

    ``models_by_q``: trained models per number of given quadrants (consecutive, e.g. 1,
    2, 3); ``max_index``: the largest test digit the slider reaches (default: the last
    of the smallest test split); ``seed``: the first picture's (each "Resample": +1).
    """
    _check_quadrants(models_by_q)
    last = min(len(models.splits.test) for models in models_by_q.values()) - 1
    max_index = last if max_index is None else min(max_index, last)
    if max_index < 0:
        raise ValueError("max_index must be at least 0.")
    return CompletionExplorer(models_by_q, max_index, seed, dpi)
