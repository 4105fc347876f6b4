"""The three ways of training the same networks (Sohn et al., 2015, §3.3-3.4).

A family says which guide Pyro's ``SVI`` pairs with the model, which loss it minimises,
which estimators its model allows, and how tables and files name it; no other module
branches on a family's name.

- :data:`CVAE`: the ELBO, z ~ q(z|x,y) from the recognition network.
- :data:`GSNN`: -log p(y|x,z) with z ~ p(z|x), the path it is tested on; no recognition
  network.
- :data:`HYBRID`: alpha * L_CVAE + (1 - alpha) * L_GSNN, the two sharing the prior and
  generation networks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

# The hybrid's weight on the CVAE's loss: the value of the authors' released code.
DEFAULT_ALPHA = 0.5
# How a metrics record names an estimator's number, after the family: "cvae_nll_is",
# "gsnn_nll_mc", "hybrid_neg_elbo".
ESTIMATOR_SUFFIXES = {"mc": "nll_mc", "is": "nll_is", "neg_elbo": "neg_elbo"}


class HybridELBO:
    """alpha * L_CVAE + (1 - alpha) * L_GSNN as a loss that Pyro's ``SVI``
    accepts: two ``Trace_ELBO`` losses of the same model, with the recognition
    guide (z ~ q(z|x,y)) and with the GSNN's (z ~ p(z|x)). Training's steps call
    its ``differentiable_loss``, like an ELBO's."""

    def __init__(
        self, gsnn_guide: Callable, alpha: float, elbo: Trace_ELBO | None = None
    ) -> None:
        self.gsnn_guide, self.alpha = gsnn_guide, alpha
        self.elbo = elbo or Trace_ELBO()

    def differentiable_loss(self, model, guide, *args, **kwargs):
        cvae_loss = self.elbo.differentiable_loss(model, guide, *args, **kwargs)
        gsnn_loss = self.elbo.differentiable_loss(
            model, self.gsnn_guide, *args, **kwargs
        )
        return self.alpha * cvae_loss + (1 - self.alpha) * gsnn_loss

    __call__ = differentiable_loss  # how SVI calls a loss that is not an ELBO


@dataclass(frozen=True)
class Family:
    """One objective: the CVAE's ELBO, the GSNN's likelihood, or their weighted sum.
    ``alpha``: the weight on the CVAE's term, 1 for the CVAE, 0 for the GSNN; the
    hybrid's (``weighted``) is a setting of the run (:meth:`with_alpha`)."""

    name: str  # in cache keys and result records: "cvae"
    label: str  # in tables and progress bars: "CVAE"
    article: str  # in sentences: "a CVAE"
    alpha: float
    weighted: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(
                f"alpha weighs the CVAE's loss against the GSNN's and must lie "
                f"in [0, 1], got {self.alpha}."
            )

    def with_alpha(self, alpha: float) -> Family:
        """The hybrid with weight ``alpha``; the CVAE and the GSNN have no
        weight to set and stay as they are."""
        return replace(self, alpha=alpha) if self.weighted else self

    @property
    def recognition(self) -> bool:
        """Whether the model has a recognition network q(z|x,y)."""
        return self.weighted or self.alpha != 0

    @property
    def tag(self) -> str:
        """The family in checkpoint file names: its name, and a hybrid's weight
        where it is not the default (``hybrid_a0.25``)."""
        if self.weighted and self.alpha != DEFAULT_ALPHA:
            return f"{self.name}_a{self.alpha:g}"
        return self.name

    def key(self) -> dict:
        """What a cache key and a metrics record say of the family: its name,
        and the hybrid's weight."""
        key = {"family": self.name}
        if self.weighted:
            key["alpha"] = self.alpha
        return key

    @property
    def estimators(self) -> tuple[str, ...]:
        """Monte Carlo for every family; IS and -ELBO need a recognition
        network."""
        return ("mc", "is", "neg_elbo") if self.recognition else ("mc",)

    def result_key(self, estimator: str) -> str:
        """The metrics records' key of ``estimator`` ("mc", "is" or
        "neg_elbo")."""
        return f"{self.name}_{ESTIMATOR_SUFFIXES[estimator]}"

    def guide(self, cvae) -> Callable:
        """The guide ``SVI`` pairs with ``cvae.model``."""
        return cvae.guide if self.recognition else cvae.gsnn_guide

    def svi_loss(self, cvae, analytic_kl: bool = False):
        """The loss ``SVI`` minimises: ``Trace_ELBO`` (``TraceMeanField_ELBO``,
        the KL term in closed form, if ``analytic_kl``) or, for the hybrid,
        :class:`HybridELBO` of it."""
        elbo = TraceMeanField_ELBO() if analytic_kl else Trace_ELBO()
        if self.weighted:
            return HybridELBO(cvae.gsnn_guide, self.alpha, elbo)
        return elbo


CVAE = Family("cvae", "CVAE", "a CVAE", alpha=1.0)
GSNN = Family("gsnn", "GSNN", "a GSNN", alpha=0.0)
HYBRID = Family("hybrid", "hybrid", "the hybrid", DEFAULT_ALPHA, weighted=True)
FAMILIES = {family.name: family for family in (CVAE, GSNN, HYBRID)}


def get_family(family: str | Family) -> Family:
    """The family called ``family`` (or ``family`` itself), else a
    ``ValueError`` that says so."""
    if isinstance(family, Family):
        return family
    if family not in FAMILIES:
        raise ValueError(
            f"Unknown model family {family!r}; choose one of {tuple(FAMILIES)}."
        )
    return FAMILIES[family]
