"""Small conveniences for the chapters: the setup banner, showing package source, glue.

Every chapter starts with :func:`setup_chapter` and shows the code it explains with
:func:`show_source`, so the text always displays the code that actually runs.
"""

from __future__ import annotations

import inspect
from typing import Any

from .config import PROFILE_ENV, Profile, get_profile, resolve_device, set_seed


def setup_chapter(seed: int = 0, profile: str | None = None) -> Profile:
    """Seed everything, pick the budget (``$CVAE_PROFILE``, default full) and say which it is.

    Returns the :class:`~cvae_helpers.config.Profile` the chapter should use.
    """
    import matplotlib.pyplot as plt

    chosen = get_profile(profile)
    set_seed(seed)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "font.size": 10})
    device = resolve_device()
    if chosen.name == "quick":
        note = ("small subsets and two epochs, a smoke test: the numbers below are NOT the "
                "paper's; unset it for the full budget")
    else:
        note = "the full data and early stopping, as in the paper"
    print(f"Budget: {chosen.name} ({PROFILE_ENV}={chosen.name}): {note}. Device: {device}. "
          f"Seed: {seed}.")
    return chosen


def show_source(obj: Any):
    """The source of a package function or class as highlighted code (the code that runs)."""
    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")


def glue(name: str, value: Any, display: bool = False) -> None:
    """``myst_nb.glue`` when it is installed (the book build), else nothing (plain Jupyter, Colab)."""
    try:
        from myst_nb import glue as myst_glue
    except ModuleNotFoundError:
        return
    myst_glue(name, value, display=display)
