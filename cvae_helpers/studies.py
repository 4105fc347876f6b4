"""The runs of the seed, protocol, converged and asymptote studies (:func:`study_runs`).

A study is a list of independent runs (:class:`StudyRun`), each a setting, decoder, seed
and protocol (a profile, :func:`~cvae_helpers.config.with_levers`) that trains (or
resumes) its models, evaluates them and writes one JSON file named after it, with its
provenance. A study resumes by running its missing files, and the files of several
machines merge by copying them into one folder (``python -m cvae_helpers study list
STUDY --missing`` prints one command per missing run). A run made on another host is
its own factor, not one more seed: ``--host NAME`` names it, in its file name and
``provenance.host``. :mod:`cvae_helpers.study_report` reads the records.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from .config import (
    DECODERS,
    LEVERS,
    Profile,
    RunSpec,
    code_version,
    converged,
    cpu_model,
    describe_device,
    get_profile,
    split_levers,
    with_levers,
)
from .convergence import full_test_is
from .pipeline import cached_models, get_trained_models, metrics_record

STUDIES = ("seeds", "protocols", "converged", "asymptote")
# Where the committed studies live, below the reference folder.
STUDIES_SUBDIR = "studies"
# The quadrant setting of the protocol study: where the gap to the paper is largest.
PROTOCOL_QUADRANTS = 1
# A host name: lower-case letters and digits (it becomes part of a file name).
HOST_PATTERN = re.compile(r"[a-z0-9]+")


def asymptote_samples(profile: Profile) -> int:
    """The S of the asymptote step: the largest S of the estimators' convergence
    curves (5,000 at the full budget)."""
    return max(profile.evaluation.curve_sample_sizes)


@dataclass(frozen=True, order=True)
class StudyRun:
    """One run of a study: a setting, a decoder, a seed and a protocol (profile name);
    also IS at ``study.large_samples`` and at :func:`asymptote_samples` where asked;
    ``host``: the other host that made it (empty: the project's machine)."""

    profile: str
    num_quadrant_inputs: int
    decoder_sees_input: bool
    seed: int
    large_samples: bool = False
    asymptote: bool = False
    host: str = ""

    def __post_init__(self):
        if self.host and not HOST_PATTERN.fullmatch(self.host):
            raise ValueError(
                f"A host name is lower-case letters and digits, not {self.host!r}."
            )

    @property
    def name(self) -> str:
        """The file name of its result: ``full-long_q1_pyz_seed2``, with
        ``_host-NAME`` after it for a run made on another host."""
        q, decoder = self.num_quadrant_inputs, DECODERS[self.decoder_sees_input].tag
        host = f"_host-{self.host}" if self.host else ""
        return f"{self.profile}_q{q}_{decoder}_seed{self.seed}{host}"

    def path(self, results_dir: str | Path) -> Path:
        return Path(results_dir) / f"{self.name}.json"

    def done(self, results_dir: str | Path) -> bool:
        """Whether its result is written, with the large-S and asymptote estimates
        if it needs them."""
        path = self.path(results_dir)
        if not path.is_file():
            return False
        record = json.loads(path.read_text())
        wanted = [("is_large_s", self.large_samples), ("is_asymptote", self.asymptote)]
        return all(key in record for key, asked in wanted if asked)

    def spec(self, template: RunSpec) -> RunSpec:
        """``template`` (folders, device, precision) for this run; a profile named
        after ``template``'s, alone or with levers, is built from it, sizes kept."""
        base = template.profile
        if self.profile == base.name:
            profile = base
        elif self.profile.startswith(base.name + "-"):
            profile = with_levers(
                base, split_levers(self.profile[len(base.name) + 1 :])
            )
        else:
            profile = get_profile(self.profile)
        return replace(
            template,
            num_quadrant_inputs=self.num_quadrant_inputs,
            profile=profile,
            seed=self.seed,
            decoder_sees_input=self.decoder_sees_input,
        )

    def command(self, results_dir: str | Path) -> str:
        """The shell command that runs it (from the repository root)."""
        words = [
            "python -m cvae_helpers study run",
            f"--profile {self.profile}",
            f"--quadrants {self.num_quadrant_inputs}",
            f"--seed {self.seed}",
            "--decoder-sees-input" if self.decoder_sees_input else "",
            "--large-samples" if self.large_samples else "",
            "--asymptote" if self.asymptote else "",
            f"--host {self.host}" if self.host else "",
            f"--results {results_dir}",
        ]
        return " ".join(word for word in words if word)


def protocol_profiles(base: Profile) -> list[Profile]:
    """The protocol study's profiles: ``base`` (the tutorial's protocol), then ``base``
    with each lever alone."""
    return [base, *(with_levers(base, [lever]) for lever in LEVERS)]


def study_runs(study: str, base: Profile, host: str = "") -> list[StudyRun]:
    """The runs of ``study`` (one of :data:`STUDIES`) at ``base``'s sizes, made
    on ``host`` (empty: the project's machine)."""
    if host:
        return [replace(run, host=host) for run in study_runs(study, base)]
    if study == "seeds":
        return [
            StudyRun(base.name, q, sees_input, seed)
            for q in base.study.quadrants
            for sees_input in (False, True)
            for seed in range(
                base.study.paper_seeds if sees_input else base.study.seeds
            )
        ]
    if study == "protocols":
        return [
            StudyRun(name, PROTOCOL_QUADRANTS, False, seed, large_samples=True)
            for name in (profile.name for profile in protocol_profiles(base))
            for seed in range(base.study.paper_seeds)
        ]
    if study == "converged":
        name = converged(base).name
        return [
            StudyRun(name, q, sees_input, seed, large_samples=True)
            for q in base.study.quadrants
            for sees_input in (False, True)
            for seed in range(base.study.seeds)
        ]
    if study == "asymptote":
        name, seed = converged(base).name, base.study.asymptote_seed
        return [
            StudyRun(name, q, sees_input, seed, True, asymptote=True)
            for q in base.study.quadrants
            for sees_input in (False, True)
        ]
    raise ValueError(f"Unknown study {study!r}; choose one of {STUDIES}.")


def provenance(spec: RunSpec, code: dict, wall_seconds: float, host: str = "") -> dict:
    """Which code and machine made a run's result, and how long it took here;
    ``host``: the name of another host than the project's machine, else empty."""
    return {
        **code,
        "host": host,
        "device": describe_device(spec.device),
        "device_type": spec.device.type,
        "cpu": f"{cpu_model()}, {os.cpu_count()} cores",
        "wall_seconds": wall_seconds,
        "finished": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def run_study_run(run: StudyRun, template: RunSpec, *, progress: bool = False) -> dict:
    """Train (or resume, or reuse) and evaluate one run; its record, with the learning
    curves and provenance. Never downloads: a study measures training here."""
    started, code = time.perf_counter(), code_version()
    spec = run.spec(template)
    models = get_trained_models(spec, progress=progress, force_training=True)
    evaluating = time.perf_counter()
    record = metrics_record(models)
    if run.large_samples:
        record["is_large_s"] = full_test_is(models, (spec.profile.study.large_samples,))
    if run.asymptote:
        record["is_asymptote"] = full_test_is(
            models, (asymptote_samples(spec.profile),)
        )
    history = models.cvae_history
    record["curves"] = {
        "val_loss": history["val_loss"],
        "train_loss": history["train_loss"],
        "learning_rates": history.get("learning_rates", []),
        "best_val_loss": history["best_val_loss"],
        "baseline_best_val_loss": models.baseline_history["best_val_loss"],
    }
    record["provenance"] = provenance(
        spec, code, time.perf_counter() - started, run.host
    )
    record["provenance"]["eval_seconds"] = time.perf_counter() - evaluating
    return record


def add_asymptote(
    run: StudyRun, template: RunSpec, results_dir: str | Path, *, progress: bool = False
) -> dict:
    """Add the IS estimate at :func:`asymptote_samples` to a written record, from the
    cached models that made it (a model trained again would be another model: a CVAE
    not cached, or not the one that made the record, is refused); the record."""
    record = json.loads(run.path(results_dir).read_text())
    spec = run.spec(template)
    cvae_path = cached_models(spec)[1].path
    if not cvae_path.is_file():
        raise ValueError(
            f"{run.path(results_dir)} was made by a CVAE that is not in this "
            f"checkpoint cache ({cvae_path}): run the step where it was trained, or "
            f"make it on this host as its own run (--host NAME)."
        )
    started, code = time.perf_counter(), code_version()
    models = get_trained_models(spec, progress=progress, force_training=True)
    history = models.cvae_history
    made_by = (len(history["val_loss"]), history["best_val_loss"])
    if made_by != (record["epochs_cvae"], record["curves"]["best_val_loss"]):
        raise ValueError(
            f"The cached CVAE at {cvae_path} is not the one that made "
            f"{run.path(results_dir)} (another number of epochs or best validation "
            f"loss): run the step where it was trained, or on this host as its own "
            f"run (--host NAME)."
        )
    record["is_asymptote"] = full_test_is(models, (asymptote_samples(spec.profile),))
    record["is_asymptote"]["provenance"] = provenance(
        spec, code, time.perf_counter() - started, run.host
    )
    write_run(record, run, results_dir)
    return record


def write_run(record: dict, run: StudyRun, results_dir: str | Path) -> Path:
    path = run.path(results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def reference_record(reference: Path, run: StudyRun) -> dict | None:
    """The seed study's record of ``run`` made from the committed reference run's
    metrics (`make reference`), numbers untouched, no learning curves, its provenance
    naming the file and commit; None where the reference has no such model."""
    folder = reference / DECODERS[run.decoder_sees_input].folder
    path = folder / f"metrics_q{run.num_quadrant_inputs}.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    made = (metrics["profile"], metrics["seed"], metrics["decoder_sees_input"])
    if made != (run.profile, run.seed, run.decoder_sees_input):
        return None
    logs = reference / "logs"

    def logged(name: str) -> str:
        file = logs / f"{name}.txt"
        return file.read_text().strip() if file.is_file() else "unknown"

    return {
        **metrics,
        "provenance": {
            "commit": logged("commit_reference"),
            "package_modified": False,
            "device": "cpu (make reference, one thread per setting)",
            "device_type": "cpu",
            "cpu": "the reference run's (results/reference/notes.md)",
            "wall_seconds": None,
            "finished": logged("trained"),
            "eval_seconds": metrics["eval_seconds"],
            "source": f"{path.parent.name}/{path.name}",
        },
    }


def adopt_reference(
    reference: Path, results_dir: str | Path, base: Profile
) -> list[Path]:
    """Write the seed study's records that the committed reference holds (seed 0 of
    ``base``) into ``results_dir`` where they are missing; the paths written."""
    written = []
    for run in study_runs("seeds", base):
        record = None if run.done(results_dir) else reference_record(reference, run)
        if record is not None:
            written.append(write_run(record, run, results_dir))
    return written


def host_of(record: dict) -> str:
    """The host a record was made on: its name, or empty for the project's machine."""
    return record.get("provenance", {}).get("host", "")


def load_runs(results_dir: str | Path, runs: Iterable[StudyRun]) -> list[dict]:
    """The records of ``runs`` found in ``results_dir`` (the missing ones left out)."""
    paths = (run.path(results_dir) for run in runs)
    return [json.loads(path.read_text()) for path in paths if path.is_file()]


def load_study(study: str, spec: RunSpec, reference: Path | None = None) -> list[dict]:
    """The records of ``study`` for a chapter: at the reference budget those committed
    in ``reference``/studies (none trained); at any other, every run, trained here."""
    if spec.profile.reference:
        runs = study_runs(study, spec.profile)
        return load_runs(reference / STUDIES_SUBDIR, runs) if reference else []
    results = spec.checkpoint_dir / STUDIES_SUBDIR / spec.profile.name
    return run_study(study, spec, results)


def do_run(
    run: StudyRun, template: RunSpec, results_dir: str | Path, *, progress: bool = False
) -> Path:
    """Make ``run``'s record in ``results_dir``: train (or resume) and evaluate it,
    or add the asymptote step where only that is missing; its path."""
    if run.asymptote and replace(run, asymptote=False).done(results_dir):
        add_asymptote(run, template, results_dir, progress=progress)
        return run.path(results_dir)
    return write_run(run_study_run(run, template, progress=progress), run, results_dir)


def run_study(
    study: str, template: RunSpec, results_dir: str | Path, *, progress: bool = False
) -> list[dict]:
    """Every run of ``study`` at ``template``'s sizes, the missing ones run here, in
    order (a chapter's quick build); the records."""
    runs = study_runs(study, template.profile)
    for run in runs:
        if not run.done(results_dir):
            do_run(run, template, results_dir, progress=progress)
    return load_runs(results_dir, runs)
