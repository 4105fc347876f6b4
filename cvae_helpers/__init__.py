"""Helper package of the CVAE book: data, models, training, evaluation and figures."""

__version__ = "0.1.0"
