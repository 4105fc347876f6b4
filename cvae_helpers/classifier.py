"""A small MNIST classifier, trained on the training split only and cached (or fetched
from the release at the full budget) like the other models. The diversity measurements
(:mod:`cvae_helpers.diversity`) ask it which digit each completed image shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import pretrained
from .config import RunSpec, set_seed
from .data import IMAGE_SIZE, batched, load_splits
from .training import TrainingRun, TrainingSteps, fit, make_batches

NUM_CLASSES = 10
# The classifier's layers: part of its cache key.
ARCHITECTURE = {"channels_1": 16, "channels_2": 32, "hidden": 128}


class DigitClassifier(nn.Module):
    """Two 3×3 convolutions with max pooling, then a 128-unit layer:
    ``(batch, 28, 28)`` or ``(batch, 784)`` images in [0, 1] to
    ``(batch, 10)`` logits."""

    def __init__(
        self, channels_1: int = 16, channels_2: int = 32, hidden: int = 128
    ) -> None:
        super().__init__()
        self.config = {
            "channels_1": channels_1,
            "channels_2": channels_2,
            "hidden": hidden,
        }
        self.conv1 = nn.Conv2d(1, channels_1, 3, padding=1)
        self.conv2 = nn.Conv2d(channels_1, channels_2, 3, padding=1)
        self.fc1 = nn.Linear(channels_2 * 7 * 7, hidden)
        self.fc2 = nn.Linear(hidden, NUM_CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (batch, c1, 14, 14)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (batch, c2, 7, 7)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


@dataclass
class TrainedClassifier:
    """The classifier in eval mode, its training history and its test accuracy."""

    net: DigitClassifier
    history: dict
    test_accuracy: float
    num_test_images: int


def classifier_config(spec: RunSpec) -> dict:
    """Everything that determines a trained classifier: its checkpoint's cache key. It
    sees whole digits, so the number of given quadrants, the decoder and the family play
    no part."""
    return {
        "model": "classifier",
        **ARCHITECTURE,
        "seed": spec.seed,
        "profile": spec.profile.training_dict(),
    }


def classifier_path(spec: RunSpec) -> Path:
    """Where the classifier of ``spec``'s budget and seed is cached."""
    return spec.checkpoint_dir / spec.profile.name / f"classifier_seed{spec.seed}.pt"


def wanted_classifier(spec: RunSpec) -> pretrained.CachedModel:
    """The classifier of ``spec``'s budget and seed as the release lists it
    (``full/classifier_seed0.pt``)."""
    path = classifier_path(spec)
    return pretrained.CachedModel(
        "classifier",
        path,
        classifier_config(spec),
        path.relative_to(spec.checkpoint_dir).as_posix(),
    )


@torch.no_grad()
def accuracy(net: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of ``images`` ``(N, 28, 28)`` classified as their ``labels``
    ``(N,)``."""
    predicted = batched(lambda x: net(x).argmax(-1), images)
    return (predicted == labels).double().mean().item()


def get_classifier(
    spec: RunSpec, *, progress: bool = True, force_training: bool | None = None
) -> TrainedClassifier:
    """The cached classifier of ``spec``'s budget and seed, fetched from the release
    (:func:`~cvae_helpers.pretrained.fetch_missing`) or trained (or resumed) first.

    Adam on the cross-entropy of the training split's whole digits, early stopping on
    the validation split's; its accuracy is measured on the test split, also when its
    weights came from the release.
    """
    profile, cached = spec.profile, wanted_classifier(spec)
    if profile.fetch_pretrained:
        pretrained.fetch_missing([cached], force=force_training)
    # The masks do not matter here: the split's whole images are put back together.
    splits = load_splits(
        1,
        spec.data_dir,
        train_size=profile.training.train_size,
        val_subset=profile.training.val_size,
        test_size=profile.evaluation.test_size,
    ).to(spec.device)
    set_seed(spec.seed)
    net = DigitClassifier(**ARCHITECTURE).to(spec.device)
    train, val, test = splits.train, splits.val, splits.test

    def loss(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(net(images), labels, reduction="sum")

    batches = make_batches(spec, (train.images, train.labels), (val.images, val.labels))
    run = TrainingRun(
        net, cached.config, profile, "classifier", *batches, cached.path, progress
    )
    with run.explaining_nan():
        lr = profile.training.learning_rate
        steps = TrainingSteps(loss, net.parameters(), "cross-entropy, one Adam", lr)
        history = fit(steps, *batches, run)
    return TrainedClassifier(
        net, history, accuracy(net, test.images, test.labels), len(test)
    )
