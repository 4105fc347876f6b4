"""Diversity, measured: a classifier names the digit of each of S completions per test
input (the given quadrants with the model's Bernoulli means pasted into the hidden ones,
as the book draws them).

Per input: the entropy (bits) of the predicted labels; "ambiguous" (at least two labels
each get at least 10% of the samples); best-of-k accuracy (one of the first k samples is
classified as the true digit); the classifier's mean confidence; and for a model with a
latent code, the spread of its prior p(z|x), averaged over the code's dimensions
(completions can only differ as much as the codes they are decoded from).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .classifier import TrainedClassifier
from .config import RunSpec
from .data import MaskedSplit
from .evaluation import Estimate
from .families import CVAE as CVAE_FAMILY
from .families import get_family
from .models import CVAE, BaselineNet, fill_hidden, flatten
from .pipeline import get_trained_models

BEST_OF = (1, 5, 20)
AMBIGUOUS_SHARE = 0.1  # a label "counts" once it gets this share of the samples
NUM_CLASSES = 10
DIVERSITY_SAMPLES = 100  # S completions per input


@torch.no_grad()
def completions(
    model: CVAE | BaselineNet,
    inputs: torch.Tensor,
    num_samples: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``num_samples`` completed images ``(num_samples, batch, 784)`` of ``inputs``
    ``(batch, 28, 28)``: for a CVAE (GSNN, hybrid) draws z ~ p(z|x) decoded into
    Bernoulli means; the baseline's one guess repeated (the zero-diversity reference).
    """
    xs = flatten(inputs)
    if isinstance(model, BaselineNet):
        probs = model(xs).expand(num_samples, *xs.shape)
    else:
        probs = model.sample(
            xs, noise=model.latent_noise(num_samples, len(xs), generator)
        )
    return fill_hidden(xs, probs)


@torch.no_grad()
def classify(
    classifier: torch.nn.Module, images: torch.Tensor, batch_size: int = 2000
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted labels and the classifier's confidence (largest softmax probability),
    both ``(...)``, for images ``(..., 784)``."""
    flat = images.reshape(-1, images.shape[-1])
    probs = torch.cat([classifier(part).softmax(-1) for part in flat.split(batch_size)])
    confidence, labels = probs.max(-1)
    return labels.reshape(images.shape[:-1]), confidence.reshape(images.shape[:-1])


def label_shares(labels: torch.Tensor) -> torch.Tensor:
    """The share of each digit among the S labels of each input: ``(S, N)`` to
    ``(N, 10)``."""
    counts = torch.zeros(
        labels.shape[1], NUM_CLASSES, dtype=torch.float64, device=labels.device
    )
    counts.scatter_add_(1, labels.T, torch.ones_like(labels.T, dtype=torch.float64))
    return counts / labels.shape[0]


def diversity_metrics(
    labels: torch.Tensor,
    truth: torch.Tensor,
    best_of: Sequence[int] = BEST_OF,
    share: float = AMBIGUOUS_SHARE,
) -> dict[str, torch.Tensor]:
    """Per-input diversity ``(N,)`` from predicted labels ``(S, N)`` and true
    labels ``(N,)``.

    Returns ``entropy_bits`` (of the predicted-label distribution; 0 when every
    sample gets the same label), ``ambiguous`` (1.0 when at least two labels
    each get at least ``share`` of the samples) and ``best_of_{k}`` (1.0 when
    one of the first k samples is classified as the truth).
    """
    if labels.shape[0] < max(best_of):
        raise ValueError(
            f"best-of-{max(best_of)} needs at least {max(best_of)} samples per "
            f"input, got {labels.shape[0]}."
        )
    shares = label_shares(labels)
    logs = torch.where(shares > 0, shares.log2(), 0.0)
    metrics = {
        "entropy_bits": -(shares * logs).sum(-1),
        "ambiguous": ((shares >= share - 1e-12).sum(-1) >= 2).double(),
    }
    for k in best_of:
        metrics[f"best_of_{k}"] = (labels[:k] == truth).any(0).double()
    return metrics


@torch.no_grad()
def measure_diversity(
    model: CVAE | BaselineNet,
    classifier: torch.nn.Module,
    split: MaskedSplit,
    num_samples: int = 100,
    seed: int = 0,
    batch_size: int = 100,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-input metrics (:func:`diversity_metrics` plus ``confidence``) over ``split``,
    and the predicted labels ``(num_samples, N)``; the latent noise is drawn from a
    generator seeded by ``seed``, so the numbers do not depend on what ran before."""
    generator = torch.Generator().manual_seed(seed)
    batches = [  # (labels, confidence) per batch of inputs
        classify(classifier, completions(model, part, num_samples, generator))
        for part in split.inputs.split(batch_size)
    ]
    labels = torch.cat([labels for labels, _ in batches], dim=1).cpu()
    metrics = diversity_metrics(labels, split.labels.cpu())
    confidence = torch.cat([confidence for _, confidence in batches], dim=1)
    metrics["confidence"] = confidence.double().mean(0).cpu()
    if isinstance(model, CVAE):
        metrics["prior_scale"] = prior_spread(model, split.inputs, batch_size)
    return metrics, labels


@torch.no_grad()
def prior_spread(
    model: CVAE, inputs: torch.Tensor, batch_size: int = 100
) -> torch.Tensor:
    """Per input ``(N,)``: the standard deviation of p(z|x), averaged over the code's
    dimensions, for inputs ``(N, 28, 28)``. Near 0, every draw decodes to the same
    completion."""
    return torch.cat(
        [
            model.prior(flatten(part))[1].double().mean(-1)
            for part in inputs.split(batch_size)
        ]
    ).cpu()


def summarise(metrics: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """``[mean, standard error]`` over inputs of each per-input metric."""
    estimates = {name: Estimate.of(values) for name, values in metrics.items()}
    return {name: [e.mean, e.stderr] for name, e in estimates.items()}


def identity_switches(
    labels: torch.Tensor, count: int, share: float = AMBIGUOUS_SHARE
) -> list[tuple[int, int, int, float, float]]:
    """The ``count`` inputs whose completions split most evenly between two
    digits.

    From predicted labels ``(S, N)``: among the inputs whose two most frequent
    labels each get at least ``share`` of the samples, those whose second
    label's share is largest. Returns tuples, most even first:
    ``(index, first label, second label, first share, second share)``.
    """
    shares = label_shares(labels)
    top = shares.topk(2, dim=-1)
    second = top.values[:, 1]
    eligible = (second >= share - 1e-12).nonzero().flatten()
    most_even = second[eligible].argsort(descending=True, stable=True)
    return [
        (int(i), *top.indices[i].tolist(), *top.values[i].tolist())
        for i in eligible[most_even][:count]
    ]


def entropy_bits_of(shares: Sequence[float]) -> float:
    """The entropy in bits of a distribution given as shares (a helper for checks and
    prose)."""
    return -sum(p * math.log2(p) for p in shares if p > 0)


def diversity_study(
    spec: RunSpec,
    classifier: TrainedClassifier,
    *,
    families: Sequence[str] = ("gsnn", "cvae", "hybrid"),
    quadrants: Sequence[int] = (1, 2, 3),
    num_samples: int = DIVERSITY_SAMPLES,
    num_images: int | None = None,
    switches: int = 8,
    progress: bool = False,
) -> dict:
    """The baseline (NN) and each family, per number of given quadrants, on the first
    ``num_images`` test inputs (default: the budget's ``diversity_images``).

    Returns a JSON-ready record: per setting and model each metric's mean and standard
    error, and the CVAE's :func:`identity_switches`. Models come from the checkpoint
    cache (trained first if missing), with ``spec``'s decoder.
    """
    num_images = num_images or spec.profile.evaluation.diversity_images
    record: dict = {
        "profile": spec.profile.name, "seed": spec.seed, "decoder_sees_input": spec.decoder_sees_input,
        "num_samples": num_samples, "classifier_test_accuracy": classifier.test_accuracy,
        "classifier_test_images": classifier.num_test_images, "settings": {}, "switches": {},
    }  # fmt: skip
    for q in quadrants:
        setting: dict[str, dict] = {}
        for family in map(get_family, families):
            models = get_trained_models(
                spec.for_quadrants(q).with_family(family), progress=progress
            )
            split = models.splits.test.take(slice(0, num_images))
            record["num_images"] = len(split)
            if "NN" not in setting:
                metrics, _ = measure_diversity(
                    models.baseline, classifier.net, split, num_samples, spec.seed
                )
                setting["NN"] = summarise(metrics)
            metrics, labels = measure_diversity(
                models.cvae, classifier.net, split, num_samples, spec.seed
            )
            setting[family.label] = summarise(metrics)
            if family is CVAE_FAMILY:  # the switches shown are the CVAE's
                record["switches"][str(q)] = identity_switches(labels, switches)
        record["settings"][str(q)] = setting
    return record


@torch.no_grad()
def draw_switch_gallery(
    model: CVAE,
    classifier: torch.nn.Module,
    split: MaskedSplit,
    switches: Sequence[Sequence],
    num_samples: int = 6,
    seed: int = 0,
):
    """The identity switches (:func:`identity_switches`, or a study's ``switches``)
    drawn: each input, its truth and ``num_samples`` fresh completions with the
    classifier's labels, titled by the true digit and the study's measured split."""
    from .plotting import switch_gallery

    index = torch.tensor([int(s[0]) for s in switches])
    inputs, targets = split.inputs[index], split.targets[index]
    samples = completions(
        model, inputs, num_samples, torch.Generator().manual_seed(seed)
    )
    labels, _ = classify(classifier, samples)
    titles = [f"{int(split.labels[i])}: {a}/{b} ({pa:.0%}/{pb:.0%})" for i, a, b, pa, pb in
              ((int(s[0]), *s[1:]) for s in switches)]  # fmt: skip
    inputs, targets = flatten(inputs).cpu(), flatten(targets).cpu()
    return switch_gallery(inputs, targets, samples.cpu(), labels.cpu(), titles)
