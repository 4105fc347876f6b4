"""How sure, and how close to the paper: the runs of the seed, protocol and converged
studies, and their records.

A study is a list of independent runs (:class:`StudyRun`): one quadrant setting, one
decoder, one seed, one training protocol (a profile, :func:`~cvae_helpers.config.
with_levers`). Each run trains (or resumes, or reuses) its baseline and CVAE through
:func:`~cvae_helpers.pipeline.get_trained_models`, evaluates them, and writes one JSON
file named after it, with its provenance: commit, machine, wall time. A study
is done when every file is there, so it resumes by running the missing ones, and files
from several machines merge by copying them into one folder. ``python -m cvae_helpers
study list STUDY --missing`` prints one command per missing run, for ``xargs -P``, GNU
parallel or a SLURM array; ``make study-seeds``, ``make study-protocols`` and ``make
study-converged`` run them. :mod:`cvae_helpers.study_report` reads the records.

- ``seeds``: NN and CVAE for each of ``study_quadrants`` (1, 2 and 3 quadrants at the
  full budget), seeds ``0 .. study_seeds - 1`` for
  the default decoder p(y|z) and ``0 .. study_paper_seeds - 1`` for the paper's
  p(y|x,z).
- ``protocols``: one quadrant, p(y|z), seeds ``0 .. study_paper_seeds - 1``, the
  tutorial's protocol and each lever of :data:`~cvae_helpers.config.LEVERS` alone; IS
  also at S = ``study_large_samples``.
- ``converged``: the converged protocol (:func:`~cvae_helpers.config.converged`, the
  levers the protocol study found) for each of ``study_quadrants``, p(y|z), seeds
  ``0 .. study_paper_seeds - 1``, IS also at S = ``study_large_samples``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from .config import (
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
from .pipeline import DECODER_FILE_TAGS, get_trained_models, metrics_record
from .results import DECODER_DIRS

STUDIES = ("seeds", "protocols", "converged")
# Where the committed studies live, below the reference folder.
STUDIES_SUBDIR = "studies"
# The quadrant setting of the protocol study: where the gap to the paper is largest.
PROTOCOL_QUADRANTS = 1


@dataclass(frozen=True, order=True)
class StudyRun:
    """One run of a study: a setting, a decoder, a seed and a protocol (profile name).
    ``large_samples``: also the IS estimate at the profile's ``study_large_samples``."""

    profile: str
    num_quadrant_inputs: int
    decoder_sees_input: bool
    seed: int
    large_samples: bool = False

    @property
    def name(self) -> str:
        """The file name of its result: ``full-long_q1_pyz_seed2``."""
        decoder = DECODER_FILE_TAGS[self.decoder_sees_input]
        return f"{self.profile}_q{self.num_quadrant_inputs}_{decoder}_seed{self.seed}"

    def path(self, results_dir: str | Path) -> Path:
        return Path(results_dir) / f"{self.name}.json"

    def done(self, results_dir: str | Path) -> bool:
        """Whether its result is written, with the large-S estimate if it needs one."""
        path = self.path(results_dir)
        if not path.is_file():
            return False
        return not self.large_samples or "is_large_s" in json.loads(path.read_text())

    def spec(self, template: RunSpec) -> RunSpec:
        """``template`` (folders, device, precision) for this run. A profile named after
        ``template``'s, alone or with levers, is built from it (so that its sizes
        stay as given), any other by name."""
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
            f"--results {results_dir}",
        ]
        return " ".join(word for word in words if word)


def protocol_profiles(base: Profile) -> list[Profile]:
    """The protocol study's profiles: ``base`` (the tutorial's protocol), then ``base``
    with each lever alone."""
    return [base, *(with_levers(base, [lever]) for lever in LEVERS)]


def study_runs(study: str, base: Profile) -> list[StudyRun]:
    """The runs of ``study`` (one of :data:`STUDIES`) at ``base``'s sizes."""
    if study == "seeds":
        return [
            StudyRun(base.name, q, sees_input, seed)
            for q in base.study_quadrants
            for sees_input in (False, True)
            for seed in range(
                base.study_paper_seeds if sees_input else base.study_seeds
            )
        ]
    if study == "protocols":
        return [
            StudyRun(name, PROTOCOL_QUADRANTS, False, seed, large_samples=True)
            for name in (profile.name for profile in protocol_profiles(base))
            for seed in range(base.study_paper_seeds)
        ]
    if study == "converged":
        return [
            StudyRun(converged(base).name, q, False, seed, large_samples=True)
            for q in base.study_quadrants
            for seed in range(base.study_paper_seeds)
        ]
    raise ValueError(f"Unknown study {study!r}; choose one of {STUDIES}.")


def provenance(spec: RunSpec, code: dict, wall_seconds: float) -> dict:
    """Which code and machine made a run's result, and how long it took here."""
    return {
        **code,
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
        record["is_large_s"] = full_test_is(models, (spec.profile.study_large_samples,))
    history = models.cvae_history
    record["curves"] = {
        "val_loss": history["val_loss"],
        "train_loss": history["train_loss"],
        "learning_rates": history.get("learning_rates", []),
        "best_val_loss": history["best_val_loss"],
        "baseline_best_val_loss": models.baseline_history["best_val_loss"],
    }
    record["provenance"] = provenance(spec, code, time.perf_counter() - started)
    record["provenance"]["eval_seconds"] = time.perf_counter() - evaluating
    return record


def write_run(record: dict, run: StudyRun, results_dir: str | Path) -> Path:
    path = run.path(results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def reference_record(reference: Path, run: StudyRun) -> dict | None:
    """The seed study's record of ``run`` made from the committed reference run
    (``reference``/p_y_given_*/metrics_q*.json, `make reference`): the seed-0 row of
    the seed study is the reference itself, not a second training. None where the
    reference has no such model. The record has the reference's numbers, untouched,
    and no learning curves (the reference keeps none); its provenance names the file
    and the commit that trained it."""
    folder = reference / DECODER_DIRS[run.decoder_sees_input]
    path = folder / f"metrics_q{run.num_quadrant_inputs}.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    if (metrics["profile"], metrics["seed"], metrics["decoder_sees_input"]) != (
        run.profile,
        run.seed,
        run.decoder_sees_input,
    ):
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
        if run.done(results_dir):
            continue
        record = reference_record(reference, run)
        if record is not None:
            written.append(write_run(record, run, results_dir))
    return written


def load_runs(results_dir: str | Path, runs: Iterable[StudyRun]) -> list[dict]:
    """The records of ``runs`` found in ``results_dir`` (the missing ones are left
    out)."""
    found = []
    for run in runs:
        path = run.path(results_dir)
        if path.is_file():
            found.append(json.loads(path.read_text()))
    return found


def load_study(study: str, spec: RunSpec, reference: Path | None = None) -> list[dict]:
    """The records of ``study`` for a chapter: at the reference budget those committed
    in ``reference``/studies (the chapter trains nothing; missing runs are left out);
    at any other budget every run, trained here and kept in the checkpoint cache."""
    if spec.profile.reference:
        if reference is None:
            return []
        return load_runs(reference / STUDIES_SUBDIR, study_runs(study, spec.profile))
    results = spec.checkpoint_dir / STUDIES_SUBDIR / spec.profile.name
    return run_study(study, spec, results)


def run_study(
    study: str, template: RunSpec, results_dir: str | Path, *, progress: bool = False
) -> list[dict]:
    """Every run of ``study`` at ``template``'s sizes, the missing ones run here, in
    order; the records. For a small budget in one process (a chapter's quick build)."""
    runs = study_runs(study, template.profile)
    for run in runs:
        if not run.done(results_dir):
            write_run(run_study_run(run, template, progress=progress), run, results_dir)
    return load_runs(results_dir, runs)
