"""The engine switch (``RunSpec.engine``): which code trains and evaluates a run.

``pyro`` is what the chapters show: Pyro's ``SVI``
(:func:`~cvae_helpers.training.make_svi`), the baseline's plain PyTorch step and the
plain estimators (:func:`~cvae_helpers.evaluation.log_weights`). ``fast`` computes the
same numbers with the speed tricks of :mod:`cvae_helpers.fast`. This is the one place
that tells them apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import evaluation, fast, training
from .config import RunSpec


@dataclass(frozen=True)
class Engine:
    """The parts of one engine: ``baseline_steps(net, spec)`` and
    ``cvae_steps(cvae, spec)`` make the training steps (shaped like ``SVI``);
    ``log_weights`` scores the estimators."""

    name: str
    baseline_steps: Callable
    cvae_steps: Callable
    log_weights: Callable


ENGINES = {
    "pyro": Engine(
        "pyro", training.baseline_steps, training.make_svi, evaluation.log_weights
    ),
    "fast": Engine("fast", fast.baseline_steps, fast.cvae_steps, fast.log_weights),
}


def engine_of(spec: RunSpec) -> Engine:
    """The engine ``spec`` asks for."""
    return ENGINES[spec.engine]
