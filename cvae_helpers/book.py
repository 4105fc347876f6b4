"""What a chapter needs, in a checkout or in Colab: the setup banner, sharp figures,
progress bars where someone waits, package source, glue.

Every chapter starts with :func:`setup_chapter` and shows the code it explains with
:func:`show_source`, so the text always displays the code that actually runs.
"""

from __future__ import annotations

import inspect
import os
import textwrap
from typing import Any

from .config import PROFILE_ENV, RunSpec, set_seed

# "0" or "1" decides whether long cells show progress bars; the book's build sets "0"
# for the kernels it starts (tools/sphinx_book_ref.py).
PROGRESS_ENV = "CVAE_PROGRESS"
# Figures are drawn at this many pixels per displayed pixel ("retina"): sharp on
# high-density screens and in print.
FIGURE_DENSITY = 2


def setup_chapter(seed: int = 0, profile: str | None = None) -> RunSpec:
    """Seed everything, pick the budget (``$CVAE_PROFILE``, default full) and say which
    it is. Returns the chapter's :class:`~cvae_helpers.config.RunSpec` (1 quadrant
    given; ``spec.for_quadrants(q)`` for the others)."""
    import matplotlib.pyplot as plt

    spec = RunSpec.create(1, profile, seed=seed)
    set_seed(seed)
    _inline_figures()
    # 100 dpi sets the displayed size; the inline backend draws at FIGURE_DENSITY times
    # as many pixels (_inline_figures), and a saved figure at that density too
    plt.rcParams.update(
        {"figure.dpi": 100, "savefig.dpi": 100 * FIGURE_DENSITY, "font.size": 10}
    )
    # short enough for the book's narrowest code column (about 70 characters)
    profile = spec.profile
    print(
        f"{PROFILE_ENV}={profile.name} ({profile.description}), {spec.device}, seed {seed}"
    )
    return spec


def _inline_figures() -> None:
    """Draw figures into the notebook even where MPLBACKEND says otherwise (e.g. Agg in
    CI), as retina PNGs: twice the pixels, shown at the same size."""
    shell = _kernel_shell()
    if shell is not None:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        shell.run_line_magic("matplotlib", "inline")
        set_matplotlib_formats("retina")


def _kernel_shell():
    """The IPython shell of a notebook kernel (Jupyter, Colab, the book's build), or
    ``None`` (a script, a terminal IPython)."""
    try:
        from IPython import get_ipython
    except ModuleNotFoundError:
        return None
    shell = get_ipython()
    if shell is None or type(shell).__name__ == "TerminalInteractiveShell":
        return None
    return shell


def show_progress() -> bool:
    """Whether a long cell shows a progress bar: ``$CVAE_PROGRESS`` (``0`` or ``1``)
    where it is set (the book's build sets ``0``), else only in a notebook kernel."""
    setting = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if setting:
        return setting not in ("0", "false", "no")
    return _kernel_shell() is not None


def source_lines(obj: Any, start: str | None = None, stop: str | None = None) -> str:
    """The source of ``obj``, dedented, or its lines from the first containing ``start``
    up to (not including) the next containing ``stop``; a marker that is not found is
    an error, so a chapter cannot silently show a stale part."""
    lines = textwrap.dedent(inspect.getsource(obj)).splitlines(keepends=True)
    first = 0
    if start is not None:
        first = next((i for i, line in enumerate(lines) if start in line), None)
        if first is None:
            raise ValueError(f"{start!r} is not in the source of {obj.__qualname__}.")
    last = len(lines)
    if stop is not None:
        last = next((i for i in range(first + 1, len(lines)) if stop in lines[i]), None)
        if last is None:
            raise ValueError(
                f"{stop!r} does not follow {start!r} in {obj.__qualname__}."
            )
    return "".join(lines[first:last])


def show_source(*objs: Any, start: str | None = None, stop: str | None = None):
    """Package source as highlighted code: the code that runs, whole or the part between
    ``start`` and ``stop`` (:func:`source_lines`); several objects read as one piece."""
    from IPython.display import Code

    parts = [source_lines(obj, start, stop) for obj in objs]
    return Code(
        "\n\n".join(part.rstrip("\n") for part in parts) + "\n", language="python"
    )


def glue(name: str, value: Any, display: bool = False) -> None:
    """``myst_nb.glue`` when it is installed (the book build), else nothing (plain
    Jupyter, Colab)."""
    try:
        from myst_nb import glue as myst_glue
    except ModuleNotFoundError:
        return
    myst_glue(name, value, display=display)


def glue_figure(name: str, fig: Any = None) -> None:
    """A figure the book numbers and captions: ``fig`` (default: the current one),
    glued as ``name`` for a ``{glue:figure}`` directive (the drawing cell's own output is
    removed by its ``remove-output`` tag), and shown below the cell in Jupyter and Colab.
    """
    import matplotlib.pyplot as plt

    fig = plt.gcf() if fig is None else fig
    try:
        from myst_nb import glue as myst_glue
    except ModuleNotFoundError:
        from IPython.display import display

        display(fig)
    else:
        myst_glue(name, fig, display=True)
    plt.close(fig)
