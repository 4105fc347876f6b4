"""Paths, budgets (profiles), devices, versions, and the run spec that bundles them.

Environment variables, each overridden by its function argument: ``CVAE_DATA_DIR`` (the
data root, holding ``MNIST/raw/*.gz``), ``CVAE_CHECKPOINT_DIR`` (the model cache),
``CVAE_PROFILE`` (``full``, the default, or ``quick``), ``CVAE_DEVICE`` (``cpu``,
``cuda`` or ``auto``, the default) and ``CVAE_PRECISION`` (``fp32``, the default, or
``bf16``: ``torch.autocast`` around the training step). :mod:`cvae_helpers.pretrained`
reads ``CVAE_PRETRAINED_URL`` and ``CVAE_FORCE_TRAINING``.
"""

from __future__ import annotations

import os
import platform
import subprocess
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .families import Family, get_family

DATA_DIR_ENV = "CVAE_DATA_DIR"
CHECKPOINT_DIR_ENV = "CVAE_CHECKPOINT_DIR"
PROFILE_ENV = "CVAE_PROFILE"
DEVICE_ENV = "CVAE_DEVICE"
PRECISION_ENV = "CVAE_PRECISION"
PRECISIONS = ("fp32", "bf16")


def project_root() -> Path:
    """The repository root in a checkout, else the working directory."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def default_data_dir() -> Path:
    """``$CVAE_DATA_DIR`` if set, else ``<project>/data`` (ignored by git)."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else project_root() / "data"


def default_checkpoint_dir() -> Path:
    """``$CVAE_CHECKPOINT_DIR`` if set, else ``<project>/checkpoints``."""
    env = os.environ.get(CHECKPOINT_DIR_ENV)
    return Path(env).expanduser() if env else project_root() / "checkpoints"


@dataclass(frozen=True)
class Training:
    """What a trained model depends on: with the profile's name, its cache key.

    ``None`` sizes mean the whole split (50k train, 10k validation). The levers of
    the protocol study (chapter 12) default to the tutorial's protocol and change
    the CVAE's training only.
    """

    train_size: int | None
    val_size: int | None
    max_epochs: int
    patience: int
    batch_size: int
    learning_rate: float
    hidden_units: int = 500  # per hidden layer of the CVAE's three networks
    analytic_kl: bool = False  # TraceMeanField_ELBO: the KL term in closed form
    lr_decay: float | None = None  # learning rate × this after an epoch without gain


@dataclass(frozen=True)
class Evaluation:
    """How much the measurements on the test split use."""

    test_size: int | None  # None: all 10k test images
    num_samples: int  # S of the test-set estimators
    diversity_images: int  # test inputs of the diversity measurements
    curve_sample_sizes: tuple[int, ...]  # the S of the estimators' convergence curves
    curve_images: int  # test images of those curves
    bench_batches: int  # timed batches per speed measurement in the speed appendix


@dataclass(frozen=True)
class StudyPlan:
    """The seed and protocol studies' runs (chapters 11 and 12)."""

    quadrants: tuple[int, ...]  # the settings of the seed study
    seeds: int  # seeds 0..n-1 of the seed study's default decoder
    paper_seeds: int  # of its paper's decoder, and of the protocol study
    large_samples: int  # the protocol study's second S of the IS estimate
    asymptote_seed: int  # the seed whose models the asymptote step re-estimates


# The tutorial's values of the levers that only the CVAE's training reads.
TUTORIAL_LEVERS = {"hidden_units": 500, "analytic_kl": False, "lr_decay": None}
# The training fields of every cache key (the levers join it when pulled).
TRAINING_KEY = ("train_size", "val_size", "max_epochs", "patience", "batch_size",
                "learning_rate")  # fmt: skip


@dataclass(frozen=True)
class Profile:
    """A budget: how much data, training and sampling every part of the package
    uses, by concern. Only ``training`` (:meth:`training_dict`) keys a trained
    model; a profile with ``baseline_profile`` leans on that profile's baseline,
    cached and trained once."""

    name: str
    description: str  # what the budget is for, as a chapter's banner says it
    training: Training
    evaluation: Evaluation
    study: StudyPlan
    reference: bool  # the committed reference run's budget: chapters read its results
    fetch_pretrained: bool  # a model the cache lacks is fetched from the release first
    baseline_profile: Profile | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> Profile:
        """This profile with ``changes``, each field found in the part that holds
        it: ``replace(max_epochs=4, num_samples=8)``."""
        parts = {}
        for part in ("training", "evaluation", "study"):
            ours = {k: changes.pop(k) for k in list(changes)
                    if k in getattr(self, part).__dataclass_fields__}  # fmt: skip
            if ours:
                parts[part] = replace(getattr(self, part), **ours)
        return replace(self, **parts, **changes)

    def training_dict(self) -> dict:
        """The fields that change a trained model: its cache key. A lever at the
        tutorial's value is left out, so that the tutorial's keys stay as they
        were."""
        training = asdict(self.training)
        return {
            "name": self.name,
            **{key: training[key] for key in TRAINING_KEY},
            **{lever: training[lever] for lever, tutorial in TUTORIAL_LEVERS.items()
               if training[lever] != tutorial},
        }  # fmt: skip

    @property
    def for_baseline(self) -> Profile:
        """The profile the baseline trains with: ``baseline_profile``, else this
        one with the CVAE's levers at the tutorial's values."""
        return self.baseline_profile or self.replace(**TUTORIAL_LEVERS)


PROFILES: dict[str, Profile] = {
    # The paper's and Pyro tutorial's setup: Adam 1e-3, early stopping with patience 3,
    # <= 50 epochs.
    "full": Profile(
        name="full",
        description="the real experiment",
        training=Training(
            train_size=None,  # all 50k
            val_size=None,  # all 10k
            max_epochs=50,
            patience=3,
            batch_size=128,
            learning_rate=1e-3,
        ),
        evaluation=Evaluation(
            test_size=None,  # all 10k
            num_samples=100,
            diversity_images=1000,
            curve_sample_sizes=(1, 3, 10, 30, 100, 300, 1000, 3000, 5000),
            curve_images=500,
            bench_batches=30,
        ),
        study=StudyPlan(
            quadrants=(1, 2, 3),
            seeds=5,
            paper_seeds=3,
            large_samples=1000,
            # the first seed the one path trained for both decoders: seeds 0-2 of
            # p(y|z) were trained by the retired fast engine, whose models are gone
            asymptote_seed=3,
        ),
        reference=True,
        fetch_pretrained=True,
    ),
    # A smoke-test budget for CI: small subsets, two epochs, few samples; never
    # downloads. Its studies are a smoke test too: one setting, no spread for the
    # second decoder.
    "quick": Profile(
        name="quick",
        description="smoke test, numbers not meaningful",
        training=Training(
            train_size=3000,
            val_size=1000,
            max_epochs=2,
            patience=3,
            batch_size=128,
            learning_rate=1e-3,
        ),
        evaluation=Evaluation(
            test_size=1000,
            num_samples=10,
            diversity_images=50,
            curve_sample_sizes=(1, 3, 10, 30, 100, 300),
            curve_images=100,
            bench_batches=5,
        ),
        study=StudyPlan(
            quadrants=(1,), seeds=2, paper_seeds=1, large_samples=30, asymptote_seed=0
        ),
        reference=False,
        fetch_pretrained=False,
    ),
}
# The release workflow's dry run (make release-dry-run): quick's budget, fetched from
# the release like "full", so that the export, the download and the checksums are
# checked in minutes.
PROFILES["dryrun"] = replace(
    PROFILES["quick"],
    name="dryrun",
    fetch_pretrained=True,
    description="quick's sizes, fetched from a release",
)


# The protocol study's levers, each a change to a base profile (Sohn et al. do not give
# their MNIST protocol; the authors' released code decays Adam's learning rate).
# "long": to convergence, patience 10 and six times the epochs (300 at the full
# budget); "analytic-kl": TraceMeanField_ELBO; "lr-decay": halve the learning rate
# after each epoch without a gain in validation loss; "wide": 1,000 hidden units.
LEVERS: dict[str, Callable[[Profile], dict]] = {
    "long": lambda p: {"patience": 10, "max_epochs": 6 * p.training.max_epochs},
    "analytic-kl": lambda profile: {"analytic_kl": True},
    "lr-decay": lambda profile: {"lr_decay": 0.5},
    "wide": lambda profile: {"hidden_units": 1000},
}


def with_levers(
    base: Profile, levers: Sequence[str], name: str | None = None
) -> Profile:
    """``base`` with the protocol ``levers`` pulled, called ``name`` (default
    ``base-lever-lever``); its CVAEs lean on ``base``'s baseline."""
    changes: dict = {}
    for lever in levers:
        if lever not in LEVERS:
            choices = sorted(LEVERS)
            raise ValueError(f"Unknown lever {lever!r}; choose from {choices}.")
        changes.update(LEVERS[lever](base))
    pulled = " + ".join(levers) or "none"
    return base.replace(
        name=name or "-".join([base.name, *levers]),
        description=f"{base.description}, levers: {pulled}",
        fetch_pretrained=False,
        baseline_profile=base.for_baseline,
        **changes,
    )


# The converged protocol (chapter 12): the levers that beat the tutorial's protocol on the
# validation split by more than the seed spread in the committed protocol study
# (study_report.levers_that_help; a test holds this to the committed runs), pulled together.
CONVERGED_LEVERS = ("long", "analytic-kl", "lr-decay")


def converged(base: Profile) -> Profile:
    """``base`` with :data:`CONVERGED_LEVERS` pulled; at the full budget it is
    the profile ``converged`` (named ``full-long-analytic-kl-lr-decay``, after
    its levers, so that its runs and checkpoints say what trained them)."""
    return with_levers(base, CONVERGED_LEVERS)


# Not the book's default: the book reproduces the tutorial's protocol.
PROFILES["converged"] = converged(PROFILES["full"])


def get_profile(name: str | None = None, **overrides) -> Profile:
    """The profile called ``name`` (default ``$CVAE_PROFILE``, else ``full``), with
    overrides. ``BASE-LEVER[-LEVER]``, e.g. ``full-long`` or ``quick-lr-decay``, is
    ``BASE`` with those :data:`LEVERS` pulled (:func:`with_levers`)."""
    name = name or os.environ.get(PROFILE_ENV, "full")
    base, _, rest = name.partition("-")
    if name in PROFILES:
        profile = PROFILES[name]
    elif base in PROFILES and rest and split_levers(rest) is not None:
        profile = with_levers(PROFILES[base], split_levers(rest))
    else:
        raise ValueError(
            f"Unknown profile {name!r}; choose one of {sorted(PROFILES)}, or one of "
            f"them with levers {sorted(LEVERS)} joined by '-', e.g. 'full-long' "
            f"(argument or the {PROFILE_ENV} environment variable)."
        )
    return profile.replace(**overrides) if overrides else profile


def split_levers(text: str) -> list[str] | None:
    """``"long-lr-decay"`` to ``["long", "lr-decay"]`` (lever names contain '-'), or
    ``None`` where it is not a chain of :data:`LEVERS`."""
    if not text:
        return []
    for lever in sorted(LEVERS, key=len, reverse=True):
        if text == lever or text.startswith(lever + "-"):
            rest = split_levers(text[len(lever) + 1 :])
            if rest is not None:
                return [lever, *rest]
    return None


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, else ``$CVAE_DEVICE``, else CUDA when available, else the CPU."""
    choice = str(device) if device is not None else os.environ.get(DEVICE_ENV, "auto")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"Device {choice!r} was asked for, but CUDA is not available here; "
            f"use 'cpu' or 'auto' (argument or the {DEVICE_ENV} environment variable)."
        )
    if not (choice == "cpu" or choice.startswith("cuda")):
        raise ValueError(
            f"Unknown device {choice!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'."
        )
    return torch.device(choice)


def cpu_model() -> str:
    """This CPU's model, e.g. ``"AMD EPYC 9B14"`` (/proc/cpuinfo, else ``platform``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_kernels() -> str:
    """The instruction set torch's CPU kernels dispatch to here (``"AVX512"``,
    ``"AVX2"``, ``"DEFAULT"``...). Two hosts with the same CPU name may differ
    in it, and with it in how sums round: a seed is bitwise reproducible only on
    the same kernels and the same number of threads."""
    capability = getattr(torch.backends.cpu, "get_cpu_capability", None)
    return capability() if capability is not None else "unknown"


def describe_device(device: torch.device) -> str:
    """``device`` in words for a result's provenance: the GPU's name, or the
    CPU's with its kernels and threads, e.g.
    ``"cpu (AMD EPYC 9B14, AVX512 kernels, 1 thread)"``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return (
        f"cpu ({cpu_model()}, {cpu_kernels()} kernels, "
        f"{threads} thread{'' if threads == 1 else 's'})"
    )


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` has fast bf16 matmuls: AVX512-BF16 or AMX on a CPU, Ampere or
    later on a GPU. Elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(
        torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """``precision``, else ``$CVAE_PRECISION``, else ``fp32``. ``bf16``: matmuls
    autocast to bf16 (fp16 with a gradient scaler on a GPU without bf16), the rest in
    fp32; on a CPU without AVX512-BF16 or AMX, ``fp32`` with a warning."""
    choice = precision or os.environ.get(PRECISION_ENV, "fp32")
    if choice not in PRECISIONS:
        raise ValueError(
            f"Unknown precision {choice!r}; choose one of {PRECISIONS} "
            f"(argument or the {PRECISION_ENV} environment variable)."
        )
    if choice == "bf16" and device.type == "cpu" and not bf16_supported(device):
        warnings.warn(
            "bf16 was asked for, but this CPU has no AVX512-BF16 or AMX, where bf16 "
            "would be slower than fp32: training in fp32 instead.",
            stacklevel=2,
        )
        return "fp32"
    return choice


@dataclass(frozen=True)
class Decoder:
    """One generation network's names in labels, checkpoint files and folders."""

    sees_input: bool  # p(y|x,z), the paper's; else p(y|z), the Pyro example's
    label: str  # "p(y|z)"
    long_label: str  # and whose choice it is
    tag: str  # in checkpoint file names: "cvae_pyz.pt"
    folder: str  # results/reference/p_y_given_z/


DECODERS = {
    False: Decoder(
        False, "p(y|z)", "p(y|z), the Pyro example's (default)", "pyz", "p_y_given_z"
    ),
    True: Decoder(True, "p(y|x,z)", "p(y|x,z), the paper's", "pyxz", "p_y_given_xz"),
}


def check_num_quadrant_inputs(num_quadrant_inputs: object) -> int:
    """``num_quadrant_inputs`` if it is 1, 2 or 3, else a ``ValueError``."""
    if isinstance(num_quadrant_inputs, bool) or num_quadrant_inputs not in (1, 2, 3):
        raise ValueError(
            f"num_quadrant_inputs must be 1, 2 or 3 (the number of quadrants given as input), "
            f"got {num_quadrant_inputs!r}."
        )
    return int(num_quadrant_inputs)


@dataclass(frozen=True)
class RunSpec:
    """One run: setting, budget, seed, decoder, objective (``family``) and where.

    Built once at the edge (:meth:`create`) and passed down. Every field but
    ``data_dir``, ``checkpoint_dir`` and ``device`` is part of the models' cache keys.
    """

    num_quadrant_inputs: int
    profile: Profile
    seed: int = 0
    decoder_sees_input: bool = False
    data_dir: Path = field(default_factory=default_data_dir)
    checkpoint_dir: Path = field(default_factory=default_checkpoint_dir)
    device: torch.device = field(default_factory=lambda: resolve_device())
    precision: str = "fp32"
    family: Family = field(default_factory=lambda: get_family("cvae"))

    def __post_init__(self) -> None:
        check_num_quadrant_inputs(self.num_quadrant_inputs)
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"Unknown precision {self.precision!r}; choose one of {PRECISIONS}."
            )
        object.__setattr__(self, "family", get_family(self.family))

    @classmethod
    def create(
        cls,
        num_quadrant_inputs: int = 1,
        profile: Profile | str | None = None,
        *,
        precision: str | None = None,
        device: str | torch.device | None = None,
        data_dir: str | Path | None = None,
        checkpoint_dir: str | Path | None = None,
        **choices,
    ) -> RunSpec:
        """Resolve every default once (the environment applies where an argument is
        ``None``); ``choices``: ``seed``, ``decoder_sees_input``, ``family``."""
        device = resolve_device(device)
        checkpoint_dir = checkpoint_dir or default_checkpoint_dir()
        return cls(
            num_quadrant_inputs=num_quadrant_inputs,
            profile=profile if isinstance(profile, Profile) else get_profile(profile),
            data_dir=Path(data_dir or default_data_dir()).expanduser(),
            checkpoint_dir=Path(checkpoint_dir).expanduser(),
            device=device,
            precision=resolve_precision(precision, device),
            **choices,
        )

    @property
    def decoder(self) -> Decoder:
        """The generation network's names (label, file tag, folder)."""
        return DECODERS[self.decoder_sees_input]

    def for_quadrants(self, num_quadrant_inputs: int) -> RunSpec:
        """The same run for another number of given quadrants."""
        return replace(self, num_quadrant_inputs=num_quadrant_inputs)

    def for_baseline(self) -> RunSpec:
        """The run of this run's baseline: the same, with the profile it trains with
        (:attr:`Profile.for_baseline`)."""
        return replace(self, profile=self.profile.for_baseline)

    def with_decoder(self, decoder_sees_input: bool) -> RunSpec:
        """The same run with the other generation network."""
        return replace(self, decoder_sees_input=decoder_sees_input)

    def with_family(self, family: str | Family, alpha: float | None = None) -> RunSpec:
        """The same run trained with another objective (and hybrid weight, if
        given: :meth:`Family.with_alpha`)."""
        family = get_family(family)
        return replace(
            self, family=family if alpha is None else family.with_alpha(alpha)
        )


def set_seed(seed: int) -> None:
    """Seed Python, NumPy, torch and Pyro at once (``pyro.set_rng_seed``)."""
    import pyro

    pyro.set_rng_seed(seed)


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=project_root(), capture_output=True, text=True
        )
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def code_version() -> dict:
    """The commit of the checkout this runs from, and whether its package was modified
    (read when a run starts: the code it imported)."""
    return {
        "commit": _git("rev-parse", "--short", "HEAD") or "unknown",
        "package_modified": bool(_git("status", "--porcelain", "--", "cvae_helpers")),
    }


def library_versions() -> dict[str, str]:
    """Versions that produced a result, stored with every checkpoint and record."""
    import pyro
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "pyro": pyro.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }
