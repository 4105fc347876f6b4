"""Command line: ``python -m cvae_helpers {train,bench} --help``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import DATA_DIR_ENV, PRECISIONS, PROFILES, RunSpec
from .families import DEFAULT_ALPHA, FAMILIES, get_family

# The commands that pick a trained configuration: help, description, --output help.
MODEL_COMMAND_TEXTS = {
    "train": (
        "train (or reuse) and evaluate; write metrics_q{N}.json and results.md",
        "Train the baseline and the CVAE for each quadrant setting, reusing matching "
        "checkpoints, evaluate them on the test set and write DIR/metrics_q{N}.json "
        "and DIR/results.md.",
        "directory for the results",
    ),
    "figures": (
        "write the completion grids grid_q{N}.png of (cached) models",
        "Load the models of each quadrant setting from the checkpoint cache "
        "(training them first if nothing matches) and write DIR/grid_q{N}.png: "
        "input, truth, baseline and CVAE samples for fixed and ambiguous test digits.",
        "directory for the PNGs",
    ),
    "diversity": (
        "measure the diversity of NN, GSNN, CVAE and hybrid completions (JSON)",
        "Train (or load) the classifier, then label 100 completions of each of the "
        "first test inputs for the baseline and each model family, per quadrant "
        "setting; write the study as JSON to --output.",
        "the JSON file to write",
    ),
    "convergence": (
        "MC, IS and -ELBO against S, and IS on the whole test set at large S (JSON)",
        "For each quadrant setting's CVAE: the three estimators against the number "
        "of samples S on the first test images, and the IS estimate on the whole test "
        "set at --full-test-sizes; written as JSON to --output.",
        "the JSON file to write",
    ),
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_model_arguments(command: argparse.ArgumentParser, output_help: str) -> None:
    """The options that pick a trained configuration, shared by the model commands."""
    add = command.add_argument
    add(
        "--quadrants",
        type=int,
        nargs="+",
        choices=[1, 2, 3],
        default=[1, 2, 3],
        help="numbers of quadrants given as input (default: 1 2 3)",
    )
    add(
        "--profile",
        choices=sorted(PROFILES),
        default="full",
        help="budget: quick (small subsets, CI) or full (default)",
    )
    add("--output", type=Path, required=True, help=output_help)
    data_help = f"MNIST data root (default: ${DATA_DIR_ENV}, else ./data)"
    add("--data-dir", type=Path, help=data_help)
    add(
        "--checkpoint-dir",
        type=Path,
        help="checkpoint cache (default: $CVAE_CHECKPOINT_DIR, else ./checkpoints)",
    )
    add("--seed", type=int, default=0, help="random seed (default 0)")
    add(
        "--decoder-sees-input",
        action="store_true",
        help="the paper's generation network p(y|x,z) instead of p(y|z)",
    )
    add(
        "--family",
        choices=list(FAMILIES),
        default="cvae",
        help="the objective: cvae (default), gsnn (z from the prior network, "
        "no recognition network) or hybrid (alpha CVAE + (1-alpha) GSNN)",
    )
    alpha_help = f"the hybrid's weight on the CVAE's loss (default {DEFAULT_ALPHA})"
    add("--alpha", type=float, default=DEFAULT_ALPHA, help=alpha_help)
    add(
        "--force-training",
        action="store_true",
        default=None,
        help="train here instead of downloading the release's pretrained weights "
        "(default: $CVAE_FORCE_TRAINING; the quick profile never downloads)",
    )
    _add_machine_arguments(command)


def _add_machine_arguments(command: argparse.ArgumentParser) -> None:
    """Where and in which arithmetic to train: shared by the model and bench commands."""
    command.add_argument(
        "--device", help="cpu, cuda or auto (default: $CVAE_DEVICE, else auto)"
    )
    command.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="fp32, or bf16 mixed-precision training (torch.autocast around the "
        "step) where the hardware has it (default: $CVAE_PRECISION, else fp32); "
        "evaluation is always fp32",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cvae_helpers",
        description="Train, evaluate and benchmark the baseline and the CVAE on MNIST quadrants.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (summary, description, output_help) in MODEL_COMMAND_TEXTS.items():
        _add_model_arguments(
            commands.add_parser(name, help=summary, description=description),
            output_help=output_help,
        )
    commands.choices["train"].add_argument(
        "--no-progress", action="store_true", help="hide the progress bars"
    )
    add = commands.choices["diversity"].add_argument
    add(
        "--images",
        type=_positive,
        help="test inputs measured (default: 1,000 at the full budget, 50 quick)",
    )
    add = commands.choices["convergence"].add_argument
    add(
        "--sizes",
        type=_positive,
        nargs="+",
        help="S of the curves (default: 1 ... 5,000 full, 1 ... 300 quick)",
    )
    add(
        "--images",
        type=_positive,
        help="test images of the curves (default: 500 full, 100 quick)",
    )
    add(
        "--full-test-sizes",
        type=_positive,
        nargs="+",
        default=[100, 1000, 5000],
        help="S of the whole-test-set IS estimates (default: 100 1000 5000)",
    )
    _add_study_command(commands)
    _add_measure_commands(commands)
    return parser


def _add_study_command(commands) -> None:
    """``study list|run|report|adopt-reference``: the seed, protocol and converged
    studies, one run per command."""
    study = commands.add_parser(
        "study",
        help="the seed, protocol and converged studies: list their runs, run one, "
        "report",
        description="Each study is a list of independent runs, one JSON file each in "
        "--results: `list` prints their commands (--missing: those not yet done, for "
        "xargs -P, GNU parallel or a SLURM array), `run` trains (or resumes) and "
        "evaluates one, `report` writes the tables of what is there.",
    )
    actions = study.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="print the commands of a study's runs")
    # studies.STUDIES, written out so that --help answers without importing torch
    listing.add_argument(
        "study", choices=["seeds", "protocols", "converged", "asymptote"]
    )
    listing.add_argument("--missing", action="store_true", help="only runs not done")
    run = actions.add_parser("run", help="train (or resume) and evaluate one run")
    run.add_argument("--quadrants", type=int, choices=[1, 2, 3], required=True)
    run.add_argument("--seed", type=int, required=True)
    run.add_argument("--decoder-sees-input", action="store_true")
    run.add_argument(
        "--large-samples",
        action="store_true",
        help="also the IS estimate at the profile's study.large_samples",
    )
    run.add_argument(
        "--asymptote",
        action="store_true",
        help="also the IS estimate on the whole test set at the largest S of the "
        "convergence curves (5,000 at the full budget); added to the run's record "
        "where it is written, from its cached models",
    )
    run.add_argument("--no-progress", action="store_true")
    report = actions.add_parser("report", help="write README.md with the tables")
    adopt = actions.add_parser(
        "adopt-reference",
        help="write the seed study's seed-0 runs from the committed reference run",
        description="The seed study's seed-0 row is the reference run (`make "
        "reference`): its records are made from --reference's metrics files, where "
        "they are missing in --results, instead of training those models again.",
    )
    adopt.add_argument(
        "--reference",
        type=Path,
        default=Path("results/reference"),
        help="the reference folder (default: results/reference)",
    )
    for action in (listing, run, report, adopt):
        action.add_argument(
            "--profile",
            default="full",
            help="the budget: full (default) or quick; `run`: also with levers, "
            "e.g. full-long, or converged",
        )
        action.add_argument(
            "--results",
            type=Path,
            default=Path("results/reference/studies"),
            help="the folder of the runs' JSON files (default: results/reference/studies)",
        )
    for action in (listing, run):
        action.add_argument(
            "--host",
            default="",
            help="made on another host than the project's machine (e.g. gpu): its "
            "own factor in the report, never pooled with the other runs' seeds; "
            "lower-case letters and digits",
        )
    for name in ("--data-dir", "--checkpoint-dir"):
        run.add_argument(name, type=Path)
    _add_machine_arguments(run)


def _add_measure_commands(commands) -> None:
    """``bench`` and ``step-times``: speed, printed as one line of JSON each."""
    bench = commands.add_parser(
        "bench",
        help="print seconds per 60k-image training epoch as one line of JSON",
        description="Time training steps of the default baseline and CVAE (data handling "
        "included) and extrapolate to one epoch of 60,000 images.",
    )
    add = bench.add_argument
    add("--batches", type=_positive, default=50, help="timed batches (default 50)")
    add("--batch-size", type=_positive, default=128, help="batch size (default 128)")
    add(
        "--quadrants",
        type=int,
        choices=[1, 2, 3],
        default=1,
        help="number of quadrants given (default 1)",
    )
    add("--data-dir", type=Path, help="MNIST data root")
    add(
        "--paths",
        choices=["pyro", "svi", "pyro_example"],
        nargs="+",
        default=["pyro", "svi", "pyro_example"],
        help="what to time, side by side in one run: the book's step (Trace_ELBO "
        "with one fused Adam), Pyro's SVI on the same batches, and the Pyro "
        "example's per-item Dataset + DataLoader with SVI (default: all three)",
    )
    _add_machine_arguments(bench)
    step_times = commands.add_parser(
        "step-times",
        help="print where a CVAE training step's time goes, as one line of JSON",
        description="Profile CVAE training steps on the CPU with torch.profiler, for Pyro's "
        "SVI with Trace_ELBO and for the book's step (one fused Adam): milliseconds "
        "per step in matmuls, the optimizer, other tensor ops, and Python/framework.",
    )
    add = step_times.add_argument
    add("--steps", type=_positive, default=30, help="profiled steps (default 30)")
    add("--data-dir", type=Path, help="MNIST data root")


def _write_json(record: dict, path: Path) -> None:
    from .config import library_versions

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({**record, "versions": library_versions()}, indent=2) + "\n"
    )
    print(f"Wrote {path}")


def _train(args: argparse.Namespace, specs: list[RunSpec]) -> None:
    from .pipeline import run_setting
    from .results import results_table, write_results

    records = []
    for spec in specs:
        progress, force = not args.no_progress, args.force_training
        records.append(run_setting(spec, progress=progress, force_training=force))
        write_results(records, args.output)
    print(results_table(records), end="")
    print(f"Wrote {args.output}/metrics_q*.json and {args.output}/results.md")


def _figures(args: argparse.Namespace, specs: list[RunSpec]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from .pipeline import get_trained_models
    from .plotting import completion_grid

    args.output.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        models = get_trained_models(
            spec, progress=False, force_training=args.force_training
        )
        path = args.output / f"grid_q{spec.num_quadrant_inputs}.png"
        completion_grid(models, seed=args.seed).savefig(path, dpi=80)
        print(f"Wrote {path}")


def _diversity(args: argparse.Namespace, specs: list[RunSpec]) -> None:
    from .classifier import get_classifier
    from .diversity import diversity_study

    force = args.force_training
    classifier = get_classifier(specs[0], progress=False, force_training=force)
    quadrants = [s.num_quadrant_inputs for s in specs]
    study = diversity_study(
        specs[0], classifier, quadrants=quadrants, num_images=args.images
    )
    _write_json(study, args.output)


def _convergence(args: argparse.Namespace, specs: list[RunSpec]) -> None:
    from .convergence import convergence_study

    study = convergence_study(
        specs[0],
        [s.num_quadrant_inputs for s in specs],
        sample_sizes=args.sizes,
        num_images=args.images,
        full_test_sizes=args.full_test_sizes,
    )
    _write_json(study, args.output)


def _machine(args: argparse.Namespace) -> dict:
    """Where and in which arithmetic to run, as keywords of ``RunSpec.create``."""
    names = ("precision", "device", "data_dir", "checkpoint_dir")
    return {name: getattr(args, name, None) for name in names}


def _specs(args: argparse.Namespace) -> list[RunSpec]:
    """One run spec per quadrant setting asked for, the rest as the options say."""
    spec = RunSpec.create(
        1,
        args.profile,
        seed=args.seed,
        decoder_sees_input=args.decoder_sees_input,
        family=get_family(args.family).with_alpha(args.alpha),
        **_machine(args),
    )
    return [spec.for_quadrants(q) for q in sorted(set(args.quadrants))]


MODEL_COMMANDS = {
    "train": _train,
    "figures": _figures,
    "diversity": _diversity,
    "convergence": _convergence,
}


def _measure(args: argparse.Namespace) -> None:
    """``step-times`` and ``bench``: one line of JSON each."""
    from .speed import benchmark, profile_cvae_step

    if args.command == "step-times":
        print(json.dumps(profile_cvae_step(args.steps, data_dir=args.data_dir)))
        return
    spec = RunSpec.create(args.quadrants, "full", **_machine(args))
    figures = benchmark(
        spec, num_batches=args.batches, batch_size=args.batch_size, paths=args.paths
    )
    print(json.dumps(figures))


def _study(args: argparse.Namespace) -> None:
    from . import studies, study_report

    profile = studies.get_profile(args.profile)
    if args.action == "list":
        for run in studies.study_runs(args.study, profile, args.host):
            if not (args.missing and run.done(args.results)):
                print(run.command(args.results))
        return
    if args.action == "adopt-reference":
        for path in studies.adopt_reference(args.reference, args.results, profile):
            print(f"Wrote {path}")
        return
    if args.action == "report":
        print(f"Wrote {study_report.write_report(args.results, profile)}")
        return
    run = studies.StudyRun(
        profile.name,  # "converged" is named after its levers
        args.quadrants,
        args.decoder_sees_input,
        args.seed,
        args.large_samples,
        args.asymptote,
        args.host,
    )
    if run.done(args.results):  # another study wrote it (the two share runs)
        print(f"{run.path(args.results)} is there already")
        return
    template = RunSpec.create(args.quadrants, args.profile, **_machine(args))
    path = studies.do_run(run, template, args.results, progress=not args.no_progress)
    print(f"Wrote {path}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported here so that --help answers at once, without loading torch and Pyro.
    from .checkpoints import CheckpointMismatchError
    from .data import MNISTDataError
    from .training import NonFiniteLossError

    # ValueError includes pretrained.PretrainedError (a file that fails its SHA-256 check)
    errors = (MNISTDataError, CheckpointMismatchError, NonFiniteLossError, ValueError)
    try:
        if args.command in MODEL_COMMANDS:
            MODEL_COMMANDS[args.command](args, _specs(args))
        elif args.command == "study":
            _study(args)
        else:
            _measure(args)
    except errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
