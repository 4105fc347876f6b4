"""Export the reference models and results as release assets (what
``make release-assets`` runs).

Usage (from the repository root)::

    python -m tools.release_assets [--checkpoint-dir checkpoints] [--output release]
    [--commit abc1234]
        [--profile full]
    python -m tools.release_assets --summary release/manifest.json

Writes, into ``--output`` (git-ignored), one ``.safetensors`` file per cached reference
model (the baselines and both CVAE decoders for 1, 2 and 3 quadrants, seed 0, fp32, and
the digit classifier of the diversity measurements, ``full/classifier_seed0.pt``), the
zipped ``results/reference/`` folder and ``manifest.json``, which lists each file's
SHA-256, size, configuration, library versions and the commit that trained it. Attach
every file of the folder to the release that
:data:`cvae_helpers.pretrained.DEFAULT_BASE_URL` points at (the ``release`` workflow
does, through ``tools/release_job.py``).

``--summary`` prints the manifest's files with their sizes and SHA-256 as Markdown (the
release workflow's job summary), after computing every SHA-256 again from the files next
to it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pooch

from cvae_helpers import pretrained
from cvae_helpers.checkpoints import load_checkpoint
from cvae_helpers.classifier import wanted_classifier
from cvae_helpers.config import RunSpec
from cvae_helpers.pipeline import cached_models
from cvae_helpers.results import QUADRANT_SETTINGS
from tools.release_publish import summary_markdown

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "results" / "reference"


def reference_specs(
    checkpoint_dir: str | Path | None = None,
    profile: str = "full",
    quadrants: Sequence[int] = QUADRANT_SETTINGS,
) -> list[RunSpec]:
    """The reference run's specs: seed 0, fp32, both decoders, each number of
    quadrants."""
    base = RunSpec.create(
        1,
        profile,
        seed=0,
        checkpoint_dir=checkpoint_dir,
        device="cpu",
        precision="fp32",
    )
    return [
        base.for_quadrants(q).with_decoder(d) for q in quadrants for d in (False, True)
    ]


def training_commit(reference_dir: Path = REFERENCE) -> str:
    """The commit that trained the reference models, as its README records it."""
    readme = reference_dir / "README.md"
    # "- Commit: `X` (...)", or "- Commits: `X` trained these models; `Y` evaluated them
    # again"
    match = (
        re.search(r"^- Commits?: `([0-9a-f]+)`", readme.read_text(), re.M)
        if readme.is_file()
        else None
    )
    if match is None:
        raise SystemExit(f"{readme} records no training commit; pass --commit.")
    return match.group(1)


def recorded_commit(name: str, reference_dir: Path = REFERENCE) -> str:
    """The commit a reference step recorded in ``logs/commit_<name>.txt``."""
    log = reference_dir / "logs" / f"commit_{name}.txt"
    if not log.is_file():
        raise SystemExit(
            f"{log} is missing: pass the commit that trained the {name} (--{name}-commit)."
        )
    return log.read_text().strip()


def reference_checkpoints(
    specs: Sequence[RunSpec], classifier: bool = True
) -> list[tuple[str, Path, dict]]:
    """The models of ``specs`` as (path inside the cache, path, the configuration it
    must have): the baselines and CVAEs, then (unless ``classifier`` is false) the
    classifier of each spec's budget and seed (repeats included)."""
    models = [
        (model.relative, model.path, model.config)
        for spec in specs
        for model in cached_models(spec)
    ]
    classifiers = [
        (item.relative, item.path, item.config)
        for item in map(wanted_classifier, specs)
    ]
    return models + (classifiers if classifier else [])


def export_assets(
    specs: Sequence[RunSpec],
    output: str | Path,
    *,
    commit: str,
    classifier_commit: str | None = None,
    reference_dir: str | Path | None = REFERENCE,
    exported_by: str = "unknown",
    classifier: bool = True,
) -> dict:
    """Write the weights of ``specs`` and of the classifier of their budget and seed
    (from their checkpoint cache), the reference results and the manifest into
    ``output``; returns the manifest. ``commit`` trained the models,
    ``classifier_commit`` (default ``commit``) the classifier, and ``exported_by`` is
    the commit of the code that exports them; ``classifier`` false leaves the classifier
    out (the release workflow's dry run can, ``--without-classifier``).

    Each checkpoint must be finished and made by the configuration this code asks for,
    so that what is published is what the package will accept.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    models, seen, missing = [], set(), []
    for relative, path, config in reference_checkpoints(specs, classifier):
        if relative in seen:
            continue  # both decoders share their setting's baseline; all settings share the classifier
        seen.add(relative)
        if not path.is_file():
            missing.append(str(path))
            continue
        payload = load_checkpoint(path, config)
        name = pretrained.asset_name(relative)
        trained_by = (
            (classifier_commit or commit)
            if config.get("model") == "classifier"
            else commit
        )
        pretrained.checkpoint_to_safetensors(payload, output / name, trained_by)
        models.append(
            {
                "checkpoint": relative,
                "file": name,
                "sha256": pooch.file_hash(output / name),
                "size": (output / name).stat().st_size,
                "config": payload["config"],
                "versions": payload.get("versions", {}),
                "commit": trained_by,
            }
        )
    if missing:
        raise SystemExit(
            "These reference models are not in the checkpoint cache (train them with "
            "`make reference`, the classifier with `make reference-gsnn`, or pass --checkpoint-dir):\n  "
            + "\n  ".join(missing)
        )
    manifest = {
        "format_version": pretrained.MANIFEST_FORMAT,
        "commit": commit,
        "exported": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "exported_by_commit": exported_by,
        "models": models,
    }
    if reference_dir is not None:
        archive = output / pretrained.REFERENCE_ARCHIVE
        count = pretrained.write_reference_archive(reference_dir, archive)
        manifest["reference"] = {
            "file": archive.name,
            "sha256": pooch.file_hash(archive),
            "size": archive.stat().st_size,
            "files": count,
        }
    (output / pretrained.MANIFEST_NAME).write_text(
        json.dumps(manifest, indent=1) + "\n"
    )
    return manifest


def size_table(manifest: dict) -> str:
    """One line per asset with its size in MB, and the total."""
    entries = [
        *manifest["models"],
        *([manifest["reference"]] if "reference" in manifest else []),
    ]
    lines = [f"{entry['size'] / 1e6:7.2f} MB  {entry['file']}" for entry in entries]
    total = sum(entry["size"] for entry in entries)
    return "\n".join(
        [
            *lines,
            f"{total / 1e6:7.2f} MB  in all ({len(entries)} files and the manifest)",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="the cache holding the reference models (default: $CVAE_CHECKPOINT_DIR, else ./checkpoints)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "release",
        help="where to write the assets (default: release/)",
    )
    parser.add_argument(
        "--commit",
        default=None,
        help="the commit that trained the models (default: the one results/reference/README.md records)",
    )
    parser.add_argument(
        "--classifier-commit",
        default=None,
        help="the commit that trained the classifier (default: results/reference/logs/commit_classifier.txt)",
    )
    parser.add_argument(
        "--profile",
        default="full",
        help="the budget of the models to export (default: full, the reference run's)",
    )
    parser.add_argument(
        "--without-classifier",
        action="store_true",
        help="leave the digit classifier out (the release workflow's dry run can; a release needs it)",
    )
    parser.add_argument(
        "--summary",
        type=Path,
        metavar="MANIFEST",
        default=None,
        help="print MANIFEST's files, sizes and SHA-256 (checked again) as Markdown, and export nothing",
    )
    args = parser.parse_args(argv)
    if args.summary is not None:
        print(summary_markdown(args.summary), end="")
        return
    commit = args.commit or training_commit()
    classifier_commit = (
        None
        if args.without_classifier
        else args.classifier_commit or recorded_commit("classifier")
    )
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    manifest = export_assets(
        reference_specs(args.checkpoint_dir, args.profile),
        args.output,
        commit=commit,
        classifier_commit=classifier_commit,
        exported_by=head or "unknown",
        classifier=not args.without_classifier,
    )
    print(size_table(manifest))
    print(
        f"Wrote {args.output}; attach its files to the release at {pretrained.DEFAULT_BASE_URL}"
    )


if __name__ == "__main__":
    main()
