"""Figures of the book: completion grids, loss curves, graphical models, the training
animation. Every function returns its figure and draws nothing elsewhere."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import animation
from matplotlib.patches import Circle, FancyArrowPatch

from .data import MASK_VALUE, quadrant_label
from .evaluation import most_diverse
from .models import flatten

if TYPE_CHECKING:
    from .pipeline import TrainedModels

# The -1 sentinel is drawn in a muted blue: "not given" never looks like black ink.
SENTINEL_RGB = np.array([0.55, 0.70, 0.90])


def to_rgb(images: torch.Tensor) -> np.ndarray:
    """``(..., 784)`` or ``(..., 28, 28)`` in [0, 1] with -1 sentinels to
    ``(..., 28, 28, 3)``: black ink on white, like the paper's; sentinels light blue."""
    pixels = (
        images.detach()
        .float()
        .cpu()
        .reshape(*images.shape[: -1 if images.shape[-1] == 784 else -2], 28, 28)
        .numpy()
    )
    grey = 1.0 - np.clip(pixels, 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb[pixels == MASK_VALUE] = SENTINEL_RGB
    return rgb


def compose(inputs: torch.Tensor, completion: torch.Tensor) -> torch.Tensor:
    """Put a completion ``(..., 784)`` into the hidden pixels of ``inputs``
    ``(batch, 28, 28)``."""
    flat = flatten(inputs)
    return torch.where(flat == MASK_VALUE, completion, flat)


def show_digits(
    rows: Sequence[tuple[str, torch.Tensor]],
    *,
    scale: float = 0.9,
    col_titles: Sequence[str] | None = None,
) -> plt.Figure:
    """A grid: one labelled row per ``(label, images (n, 784 or 28, 28))``."""
    n = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(
        len(rows), n, figsize=(scale * n + 1.2, scale * len(rows) + 0.3), squeeze=False
    )
    for r, (label, images) in enumerate(rows):
        rgb = to_rgb(images)
        for c in range(n):
            ax = axes[r, c]
            ax.set(xticks=[], yticks=[])
            ax.spines[:].set_visible(False)
            if c < len(rgb):
                ax.imshow(rgb[c], interpolation="nearest")
                ax.axhline(13.5, color="0.75", lw=0.4)
                ax.axvline(13.5, color="0.75", lw=0.4)
            if r == 0 and col_titles is not None and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=8)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(
        wspace=0.05, hspace=0.08, left=0.16, right=0.99, top=0.9, bottom=0.02
    )
    return fig


def completion_rows(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    baseline_probs: torch.Tensor,
    cvae_samples: torch.Tensor,
) -> list[tuple[str, torch.Tensor]]:
    """Rows input / truth / NN / CVAE samples for :func:`show_digits`; each sample of
    ``cvae_samples`` ``(num_samples, batch, 784)`` is pasted into the input."""
    truth = torch.where(inputs == MASK_VALUE, targets, inputs)
    guess = compose(inputs, baseline_probs)
    rows = [("input", inputs), ("truth", truth), ("NN", guess)]
    rows += [(f"CVAE {s + 1}", compose(inputs, y)) for s, y in enumerate(cvae_samples)]
    return rows


def plot_histories(histories: dict[str, dict], title: str = "") -> plt.Figure:
    """Training and validation loss (nats per image) per epoch, a panel per history."""
    fig, axes = plt.subplots(
        1, len(histories), figsize=(4.2 * len(histories), 3.2), squeeze=False
    )
    for ax, (name, history) in zip(axes[0], histories.items(), strict=True):
        epochs = np.arange(1, len(history["train_loss"]) + 1)
        ax.plot(epochs, history["train_loss"], "o-", ms=3, label="train")
        ax.plot(epochs, history["val_loss"], "s-", ms=3, label="validation")
        if best := history.get("best_epoch"):
            ax.axvline(best, color="0.6", ls="--", lw=1, label="best (kept)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per image")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_protocol_curves(records: Sequence[dict]) -> plt.Figure:
    """Validation −ELBO per epoch for each protocol (a study run's ``profile``): the
    mean over seeds as a line, the seeds' range as a band, over the epochs that every
    seed trained; then each seed alone, thin, where some stopped earlier. Left: every
    epoch; right: the same, near the best losses, where the protocols part."""
    fig, (whole, tail) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    by_protocol: dict[str, list[list[float]]] = {}
    for record in records:
        curves = by_protocol.setdefault(record["profile"], [])
        curves.append(record["curves"]["val_loss"])
    for ax in (whole, tail):
        for index, (name, curves) in enumerate(by_protocol.items()):
            color = f"C{index}"
            common = min(len(c) for c in curves)
            values = np.array([c[:common] for c in curves])
            epochs = np.arange(1, common + 1)
            label = f"{name} ({len(curves)} seeds)"
            ax.plot(epochs, values.mean(0), color=color, label=label)
            ax.fill_between(
                epochs, values.min(0), values.max(0), color=color, alpha=0.25
            )
            for curve in curves:
                if len(curve) > common:
                    later = np.arange(common, len(curve) + 1)
                    ax.plot(later, curve[common - 1 :], color=color, lw=0.7, alpha=0.7)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    bests = [min(r["curves"]["val_loss"]) for r in records]
    low, worst_best = min(bests), max(bests)
    # the first epochs' losses dwarf the rest: the left panel starts at the median
    # first epoch, the right one shows the band of the runs' best losses, with room
    high = float(np.median([r["curves"]["val_loss"][0] for r in records]))
    whole.set_ylim(low - 0.02 * (high - low), high)
    room = max(worst_best - low, 1.0)
    tail.set_ylim(low - 0.25 * room, min(worst_best + 1.5 * room, high))
    whole.set_title("every epoch", fontsize=9)
    tail.set_title("near the best validation losses", fontsize=9)
    whole.set_ylabel("validation −ELBO (nats per image)")
    whole.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_stopping_epochs(stopping: dict, dpi: int = 200) -> plt.Figure:
    """The IS estimate of each seed against the epoch at which early stopping ended
    its training, one panel per quadrant setting, one marker per decoder (the seed
    number beside each point). ``stopping``: :func:`cvae_helpers.study_report.
    stopping_epochs`. Drawn at ``dpi`` (hi-dpi for the book)."""
    settings = sorted({q for q, _ in stopping})
    fig, axes = plt.subplots(
        1, len(settings), figsize=(3.3 * len(settings), 3.2), dpi=dpi, squeeze=False
    )
    for ax, q in zip(axes[0], settings, strict=True):
        for sees, marker, label in ((False, "o", "p(y|z)"), (True, "s", "p(y|x,z)")):
            points = stopping.get((q, sees))
            if not points:
                continue
            color = f"C{int(sees)}"
            ax.plot(points["epochs"], points["is"], marker, color=color, label=label,
                    ms=5, ls="-" if not sees else ":", lw=0.8)  # fmt: skip
            for epoch, value, seed in zip(
                points["epochs"], points["is"], points["seeds"], strict=True
            ):
                ax.annotate(str(seed), (epoch, value), xytext=(3, 3), fontsize=6,
                            textcoords="offset points", color=color)  # fmt: skip
        ax.set_title(f"{q} quadrant{'s' * (q > 1)} given", fontsize=9)
        ax.set_xlabel("epoch at which early stopping ended")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("IS estimate, S = 100 (nats per image)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _node(ax, xy, label, observed=False, deterministic=False):
    face = "0.82" if observed else "white"
    if deterministic:
        ax.add_patch(
            plt.Rectangle((xy[0] - 0.22, xy[1] - 0.22), 0.44, 0.44, fc=face, ec="k")
        )
    else:
        ax.add_patch(Circle(xy, 0.25, fc=face, ec="k", lw=1.2))
    ax.text(*xy, label, ha="center", va="center", fontsize=13)


ARROW = dict(arrowstyle="-|>", mutation_scale=14, lw=1.2, shrinkA=17, shrinkB=17)


def _edge(ax, a, b, dashed=False, color="k"):
    ls = "--" if dashed else "-"
    ax.add_patch(FancyArrowPatch(a, b, color=color, ls=ls, **ARROW))


def draw_graphical_models() -> plt.Figure:
    """The four graphical models of Sohn et al. (2015), Fig. 1.

    (a) the baseline network x → y; (b) the CGM x → z → y with x → y; (c) recognition
    q(z|x,y), dashed; (d) the recurrent connection: x → ŷ → z → y through the baseline
    guess (x → y kept). Grey nodes are observed at training time; squares deterministic.
    """
    fig, axes = plt.subplots(1, 4, figsize=(11, 3))
    x, z, y = (0.0, 0.0), (0.0, 1.0), (1.0, 0.5)
    titles = [
        "(a) baseline NN",
        "(b) CGM: generation",
        "(c) CGM: recognition",
        "(d) recurrent connection",
    ]
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xlim(-0.9, 1.5)
        ax.set_ylim(-0.5, 1.5)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(title, fontsize=10)
    _node(axes[0], x, "x", observed=True)
    _node(axes[0], y, "y")
    _edge(axes[0], x, y)
    for ax in axes[1:]:
        _node(ax, x, "x", observed=True)
        _node(ax, z, "z")
        _node(ax, y, "y", observed=ax is axes[2])
    for a, b in ((x, z), (z, y), (x, y)):
        _edge(axes[1], a, b)
    _edge(axes[2], x, z, dashed=True, color="C3")
    _edge(axes[2], y, z, dashed=True, color="C3")
    y_hat = (-0.55, 0.5)  # left of x and z, so that no two edges cross
    _node(axes[3], y_hat, "ŷ", deterministic=True)
    for a, b in ((x, y_hat), (y_hat, z), (x, z), (z, y), (x, y)):
        _edge(axes[3], a, b)
    fig.tight_layout()
    return fig


def training_animation(
    inputs: torch.Tensor,
    snapshots: Sequence[torch.Tensor],
    val_losses: Sequence[float],
    interval_ms: int = 600,
) -> animation.Animation:
    """One frame per epoch: the recorded CVAE samples for fixed held-out inputs
    ``(k, 28, 28)``; each snapshot is uint8 ``(samples, k, 784)``."""
    samples, k = snapshots[0].shape[:2]
    fig, axes = plt.subplots(
        samples + 1, k, figsize=(1.0 * k, 1.0 * (samples + 1) + 0.5), squeeze=False
    )
    input_rgb = to_rgb(inputs)
    for row in axes:
        for c, ax in enumerate(row):
            ax.set(xticks=[], yticks=[])
            ax.imshow(input_rgb[c])
    for r, label in enumerate(["input", *(f"sample {s + 1}" for s in range(samples))]):
        axes[r, 0].set_ylabel(label, fontsize=8)
    images = [ax.images[0] for ax in axes[1:].flat]  # the samples', row by row
    title = fig.suptitle("")
    fig.tight_layout()

    def frame(i):
        probs = snapshots[i].float() / 255
        rgb = to_rgb(torch.stack([compose(inputs, probs[s]) for s in range(samples)]))
        for image, pixels in zip(images, rgb.reshape(-1, 28, 28, 3), strict=True):
            image.set_data(pixels)
        title.set_text(f"epoch {i + 1}: validation −ELBO {val_losses[i]:.1f} nats")
        return images

    anim = animation.FuncAnimation(
        fig, frame, frames=len(snapshots), interval=interval_ms, blit=False
    )
    plt.close(fig)
    return anim


def animation_html(anim: animation.Animation, alt: str) -> str:
    """``anim`` as a self-contained HTML player (matplotlib's ``to_jshtml``) whose one
    frame ``<img>`` has ``alt``, for readers who cannot see it (the book's other figures
    get theirs from their cells' ``mystnb`` metadata)."""
    if not alt.strip():
        raise ValueError(
            "animation_html needs alt text that says what the animation shows."
        )
    player = anim.to_jshtml(default_mode="once")
    frame_tag = '<img id="_anim_img'
    if player.count(frame_tag) != 1:
        raise RuntimeError(
            "matplotlib's to_jshtml no longer draws its frames in one "
            f"'{frame_tag}...'> tag; update animation_html to set the alt text."
        )
    return player.replace(frame_tag, f'<img alt="{html.escape(alt)}" id="_anim_img')


def figure_to_data_uri(fig: plt.Figure, dpi: int = 72) -> str:
    """A PNG of ``fig`` as a ``data:`` URI: a page needs no separate image file."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@torch.no_grad()
def completion_grid(
    models: TrainedModels,
    fixed: int = 5,
    ambiguous: int = 5,
    num_samples: int = 5,
    pool_size: int = 300,
    seed: int = 0,
) -> plt.Figure:
    """The completion grid of one setting (evaluation chapter, reference run).

    Columns: the first ``fixed`` test digits, then the ``ambiguous`` test digits among
    the next ``pool_size`` whose CVAE samples disagree most (``most_diverse``). Rows:
    input, truth, NN, and ``num_samples`` CVAE samples (Bernoulli means for z ~ p(z|x),
    pasted into the given quadrants), all seeded by ``seed``."""
    test, cvae = models.splits.test, models.cvae
    generator = torch.Generator().manual_seed(seed)
    pool = torch.arange(fixed, min(fixed + pool_size, len(test)))
    chosen = pool[most_diverse(cvae, test.inputs[pool], ambiguous, generator=generator)]
    indices = torch.cat([torch.arange(fixed), chosen])
    inputs, targets = test.inputs[indices], test.targets[indices]
    samples = cvae.sample(
        inputs, noise=cvae.latent_noise(num_samples, len(indices), generator)
    )
    rows = completion_rows(
        inputs.cpu(), targets.cpu(), models.baseline(inputs).cpu(), samples.cpu()
    )
    fig = show_digits(rows)
    fig.suptitle(
        f"{quadrant_label(models.spec.num_quadrant_inputs)} given (test digits {fixed} "
        f"fixed + {ambiguous} most ambiguous); labels {test.labels[indices].tolist()}",
        fontsize=10,
    )
    return fig


ESTIMATOR_STYLES = {
    "mc": ("MC, z ~ p(z|x)", "C0", "o"),
    "is": ("IS, z ~ q(z|x,y)", "C1", "s"),
    "neg_elbo": ("−ELBO, z ~ q(z|x,y)", "C2", "^"),
}


def plot_convergence(curve: dict) -> plt.Figure:
    """The estimators against S (``convergence.convergence_curve``): left, the estimate
    ± one standard error over images; right, its difference from IS at the largest S ±
    the paired standard error."""
    sizes = curve["sample_sizes"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, values in curve["estimators"].items():
        label, color, marker = ESTIMATOR_STYLES[name]
        style = dict(label=label, color=color, marker=marker, ms=4, capsize=2)
        for ax, prefix in ((left, ""), (right, "minus_best_is_")):
            ax.errorbar(
                sizes, values[prefix + "mean"], yerr=values[prefix + "stderr"], **style
            )
    right.axhline(0.0, color="0.5", lw=0.8)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("number of samples S")
    left.set_ylabel("−log p(y|x) estimate (nats/image)")
    right.set_ylabel(f"minus IS at S = {sizes[-1]:,} (nats/image)")
    left.legend(fontsize=8)
    fig.suptitle(
        f"{quadrant_label(curve['num_quadrant_inputs'])} given, {curve['num_images']} test "
        f"images, mean ± standard error",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


DIVERSITY_MODELS = ("NN", "GSNN", "CVAE", "hybrid")


def plot_diversity(study: dict) -> plt.Figure:
    """The diversity study (``diversity.diversity_study``) against the number of given
    quadrants: label entropy, the share of ambiguous inputs, and best-of-1 (solid) and
    best-of-20 (dashed) accuracy, per model, mean ± standard error over the test
    inputs."""
    quadrants = sorted(int(q) for q in study["settings"])
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    panels = (
        ("entropy_bits", "label entropy (bits)", 1.0),
        ("ambiguous", "ambiguous inputs (%)", 100.0),
    )
    for m, model in enumerate(DIVERSITY_MODELS):
        rows = [study["settings"][str(q)].get(model) for q in quadrants]
        if any(r is None for r in rows):
            continue
        style = dict(color=f"C{m}", marker="o", ms=4, capsize=2)
        for ax, (key, title, scale) in zip(axes[:2], panels, strict=True):
            means = [scale * r[key][0] for r in rows]
            errors = [scale * r[key][1] for r in rows]
            ax.errorbar(quadrants, means, yerr=errors, label=model, **style)
            ax.set_ylabel(title)
        for k, ls in ((1, "-"), (20, "--")):
            means = [100 * r[f"best_of_{k}"][0] for r in rows]
            errors = [100 * r[f"best_of_{k}"][1] for r in rows]
            label = f"{model}, best of {k}"
            axes[2].errorbar(quadrants, means, yerr=errors, ls=ls, label=label, **style)
    axes[2].set_ylabel("best-of-k accuracy (%)")
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=7, ncol=2)
    for ax in axes:
        ax.set_xticks(quadrants)
        ax.set_xlabel("quadrants given")
    fig.suptitle(
        f"{study['num_samples']} completions of each of {study['num_images']} test inputs, "
        "labelled by the classifier",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def switch_gallery(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    samples: torch.Tensor,
    sample_labels: torch.Tensor,
    titles: Sequence[str],
) -> plt.Figure:
    """Inputs whose completions switch identity: rows input, truth and the samples
    ``(num_samples, k, 784)`` (already pasted into the inputs), each sample captioned
    with the classifier's label ``(num_samples, k)``; ``titles`` head the k columns."""
    truth = torch.where(inputs == MASK_VALUE, targets, inputs)
    rows = [("input", inputs), ("truth", truth)]
    rows += [(f"sample {s + 1}", sample) for s, sample in enumerate(samples)]
    fig = show_digits(rows, scale=1.0, col_titles=titles)
    first = 2 * inputs.shape[0]  # the axes of the first sample's row
    for ax, label in zip(fig.axes[first:], sample_labels.flatten(), strict=True):
        ax.text(1, 5, str(int(label)), color="C3", fontsize=9, weight="bold")
    return fig
