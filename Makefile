# Two commands do all the setup on a fresh clone (see README.md):
#   make book   - the main job: full budget, executes every chapter, writes the HTML book
#   make test   - ruff and actionlint, unit tests, every chapter under nbmake (quick),
#                 `jupyter-book build -W` (quick), then the built explorer page in headless Chromium
# Both create the virtual environment if it is missing and find or download MNIST
# (under $CVAE_DATA_DIR, else ./data).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# torch/torchvision as this project's reference machines install them (Python 3.11, x86_64);
# override for another platform, e.g.  make test TORCH_SPEC="torch torchvision"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
CHAPTERS := $(sort $(wildcard book/*.ipynb))
REF := results/reference

.PHONY: book test env data unit notebooks book-quick browser reference reference-train reference-eval reference-bf16 \
	baseline-gap reference-gsnn reference-convergence study-seeds study-protocols study-converged study-asymptote release-assets release-dry-run sync-repo-url lint clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

data: env
	$(PY) -c "from cvae_helpers.data import load_mnist; load_mnist(train=True); load_mnist(train=False); print('MNIST ready')"

book: data
	$(BIN)/jupyter-book clean .
	CVAE_PROFILE=full $(BIN)/jupyter-book build -W --keep-going .
	$(PY) -m tools.alt_text --html _build/html
	@echo "Open _build/html/index.html"

test: lint unit notebooks book-quick browser

unit: data
	$(BIN)/pytest tests

notebooks: data
	CVAE_PROFILE=quick $(BIN)/pytest --nbmake --nbmake-timeout=1800 $(CHAPTERS)

book-quick: data
	$(BIN)/jupyter-book clean .
	CVAE_PROFILE=quick $(BIN)/jupyter-book build -W --keep-going .
	$(PY) -m tools.alt_text --html _build/html

# The built book's in-browser explorer in headless Chromium, against PyTorch (after a build;
# skipped, with the reason, where Chromium is missing unless CVAE_REQUIRE_BROWSER=1).
browser: env
	$(BIN)/pytest tests/browser_check_explorer.py

# The committed full-budget reference results (results/reference/README.md): both decoders,
# seed 0, fp32, trained with Pyro's loss and one fused Adam (the one training step), always here
# (--force-training: never the release's pretrained weights). The three quadrant settings train
# one after the other, each with torch's default threads (one per core), as `make book` trains
# them, so that an uncached `make book` on the same kind of machine makes the same numbers bit
# for bit; each setting trains its baseline, then both decoders' CVAEs, timed with
# /usr/bin/time -v. Then the completion grids, the speed benchmark (three paths), the step
# profile and the report. Resumable: run it again after an interruption and every model
# continues from its last epoch (keep CVAE_CHECKPOINT_DIR). Time the whole with
#   /usr/bin/time -v -o results/reference/logs/time_reference.txt make reference
TRAIN_REF = $(PY) -m cvae_helpers train --profile full --seed 0 --precision fp32 --no-progress \
	--force-training
reference: reference-train
	$(PY) -m cvae_helpers figures --profile full --seed 0 --output $(REF)/p_y_given_z
	$(PY) -m cvae_helpers figures --profile full --seed 0 --decoder-sees-input \
	  --output $(REF)/p_y_given_xz
	$(PY) -m cvae_helpers bench --batches 100 --precision fp32 > $(REF)/bench.json
	$(PY) -m cvae_helpers step-times --steps 50 > $(REF)/step_times.json
	date -u +%FT%TZ > $(REF)/logs/finished.txt
	$(PY) -m tools.reference_report --dir $(REF)

# The training (and evaluation) part of `reference`, alone: the benchmarks after it want an
# otherwise idle machine.
reference-train: data
	mkdir -p $(REF)/logs
	date -u +%FT%TZ > $(REF)/logs/started.txt
	git rev-parse --short HEAD > $(REF)/logs/commit_reference.txt
	set -e; for q in 1 2 3; do \
	  /usr/bin/time -v -o $(REF)/logs/time_q$$q.txt sh -c \
	    "$(TRAIN_REF) --quadrants $$q --output $(REF)/p_y_given_z && \
	     $(TRAIN_REF) --quadrants $$q --decoder-sees-input --output $(REF)/p_y_given_xz" \
	    > $(REF)/logs/train_q$$q.log 2>&1; \
	done

# The cached reference models evaluated again by the current code, with their grids and the
# report, without retraining: for a change to evaluation only. TRAINED names the commit that
# trained them (results/reference/README.md says which); the training logs, timings and
# benchmarks stay as `make reference` left them. Models missing from the cache are trained.
reference-eval: data
	test -n "$(TRAINED)" || (echo "usage: make reference-eval TRAINED=<commit that trained the models>" >&2; exit 2)
	$(PY) -m cvae_helpers train --profile full --seed 0 --precision fp32 --output $(REF)/p_y_given_z \
	  --no-progress
	$(PY) -m cvae_helpers train --profile full --seed 0 --precision fp32 --decoder-sees-input \
	  --output $(REF)/p_y_given_xz --no-progress
	$(PY) -m cvae_helpers figures --profile full --seed 0 --output $(REF)/p_y_given_z
	$(PY) -m cvae_helpers figures --profile full --seed 0 --decoder-sees-input \
	  --output $(REF)/p_y_given_xz
	$(PY) -m tools.reference_report --dir $(REF) --commit $(TRAINED) --eval-commit HEAD

# What bf16 mixed precision costs in quality: the default decoder's three settings trained in
# bf16 (seed 0), evaluated in fp32, against the fp32 reference run (results/reference/precision.json).
reference-bf16: data
	$(PY) -m cvae_helpers train --profile full --seed 0 --precision bf16 --output $(REF)/bf16 \
	  --no-progress --force-training
	$(PY) -m tools.precision_quality --dir $(REF)
	$(PY) -m cvae_helpers bench --batches 100 --paths pyro --precision fp32 > $(REF)/bf16/bench_fp32.json
	$(PY) -m cvae_helpers bench --batches 100 --paths pyro --precision bf16 > $(REF)/bf16/bench_bf16.json
	$(PY) -m tools.reference_report --dir $(REF)

# The controlled baseline comparison (results/reference/baseline_gap.json). Not part of
# `reference`: it trains nine baselines, and only a change to the baseline's training affects it.
baseline-gap: data
	$(PY) -m tools.baseline_gap --quadrants 1 2 3 --output $(REF)/baseline_gap.json

# The paper's other half (book/09_gsnn.md, book/10_diversity.md), seed 0, fp32: the GSNN and the hybrid (alpha = 0.5)
# trained with the CVAE's protocol for both decoders ($(REF)/{gsnn,hybrid}/p_y_given_*/), then the
# classifier (trained here, never the release's) and the diversity study of the default decoder
# ($(REF)/diversity.json). The CVAEs and
# baselines come from the cache `make reference` filled. GAP_PROFILE=quick REF=/tmp/ref tries it
# on the CI budget. Afterwards, `python -m tools.reference_report --commit <the commit that
# trained the CVAEs>` adds these results (and those of reference-convergence) to the README.
GAP_PROFILE ?= full
reference-gsnn: data
	mkdir -p $(REF)/logs
	git rev-parse --short HEAD > $(REF)/logs/commit_reference-gsnn.txt
	set -e; for family in gsnn hybrid; do \
	  /usr/bin/time -v -o $(REF)/logs/time_$${family}_p_y_given_z.txt $(PY) -m cvae_helpers train \
	    --profile $(GAP_PROFILE) --seed 0 --precision fp32 --family $$family \
	    --output $(REF)/$$family/p_y_given_z --no-progress; \
	  /usr/bin/time -v -o $(REF)/logs/time_$${family}_p_y_given_xz.txt $(PY) -m cvae_helpers train \
	    --profile $(GAP_PROFILE) --seed 0 --precision fp32 --family $$family --decoder-sees-input \
	    --output $(REF)/$$family/p_y_given_xz --no-progress; \
	done
	git rev-parse --short HEAD > $(REF)/logs/commit_diversity.txt
	/usr/bin/time -v -o $(REF)/logs/time_diversity.txt $(PY) -m cvae_helpers diversity \
	  --profile $(GAP_PROFILE) --seed 0 --precision fp32 --output $(REF)/diversity.json --force-training

# How the estimators converge (book/04_estimators.md): per decoder and setting, MC, IS and -ELBO
# against S = 1 ... 5,000 on 500 test images, and IS on the whole test set at S = 100, 1,000 and
# 5,000 ($(REF)/convergence_p_y_given_*.json). Needs the reference CVAEs (cached or trained).
reference-convergence: data
	mkdir -p $(REF)/logs
	git rev-parse --short HEAD > $(REF)/logs/commit_reference-convergence.txt
	/usr/bin/time -v -o $(REF)/logs/time_convergence_p_y_given_z.txt $(PY) -m cvae_helpers convergence \
	  --profile $(GAP_PROFILE) --seed 0 --precision fp32 --output $(REF)/convergence_p_y_given_z.json
	/usr/bin/time -v -o $(REF)/logs/time_convergence_p_y_given_xz.txt $(PY) -m cvae_helpers convergence \
	  --profile $(GAP_PROFILE) --seed 0 --precision fp32 --decoder-sees-input \
	  --output $(REF)/convergence_p_y_given_xz.json

# The seed, protocol and converged studies (book/11_how_sure.md and 12_how_close.md,
# cvae_helpers/studies.py): one JSON per run in $(STUDY_DIR), with its commit, machine and
# times. Resumable: only the missing runs run, and each resumes from its last epoch (keep
# CVAE_CHECKPOINT_DIR); run files from other machines merge by copying them into $(STUDY_DIR).
# STUDY_JOBS runs side by side, one thread each. The runs are independent commands: to spread
# them over more machines, hand
#   $(PY) -m cvae_helpers study list seeds --missing
# to GNU parallel or a SLURM array instead. STUDY_PROFILE=quick tries it in minutes.
# study-converged trains the converged protocol (config.CONVERGED_LEVERS) on every setting, both
# decoders, seeds 0-4; it shares its baselines with study-seeds in CVAE_CHECKPOINT_DIR. Then
# study-asymptote adds IS at S = 5,000 on the whole test set to one seed of each decoder and setting
# (StudyPlan.asymptote_seed), from the cached models that made each record (after study-converged,
# on the same machine). The seed study's seed-0 runs are the reference run's
# (`study adopt-reference`), not trained again.
# STUDY_HOST=gpu (any name) marks runs made on another host than the project's machine: their own
# files (..._host-gpu.json) and their own factor in the report, never pooled with these seeds.
STUDY_DIR ?= $(REF)/studies
STUDY_JOBS ?= 2
STUDY_PROFILE ?= full
STUDY_HOST ?=
study-seeds study-protocols study-converged study-asymptote: data
	$(PY) -m cvae_helpers study adopt-reference --profile $(STUDY_PROFILE) --results $(STUDY_DIR)
	$(PY) -m cvae_helpers study list $(@:study-%=%) --missing --profile $(STUDY_PROFILE) \
	  $(if $(STUDY_HOST),--host $(STUDY_HOST)) \
	  --results $(STUDY_DIR) | sed 's|^python |$(PY) |' | \
	  OMP_NUM_THREADS=1 xargs -P $(STUDY_JOBS) -I{} sh -c '{} --no-progress'
	$(PY) -m cvae_helpers study report --profile $(STUDY_PROFILE) --results $(STUDY_DIR)

# The release assets (pretrained weights, reference results, manifest) in release/, exported from
# the reference models in the checkpoint cache ($CVAE_CHECKPOINT_DIR, else checkpoints/).
# RELEASE_COMMIT: the commit that trained every model (the release workflow: the commit it runs
# on; default: the ones results/reference records); RELEASE_PROFILE: their budget (the dry run:
# dryrun); RELEASE_ARGS: more options of tools/release_assets.py.
RELEASE_DIR ?= release
RELEASE_PROFILE ?= full
RELEASE_COMMIT ?=
RELEASE_ARGS ?=
release-assets: env
	$(PY) -m tools.release_assets --output $(RELEASE_DIR) --profile $(RELEASE_PROFILE) \
	  $(if $(RELEASE_COMMIT),--commit $(RELEASE_COMMIT) --classifier-commit $(RELEASE_COMMIT)) $(RELEASE_ARGS)

# The release workflow's job (.github/workflows/release.yml) at a small budget, offline: its
# commands train at the dryrun budget, export, "publish" (saying what gh would run) and write the
# job summary; then a local HTTP server stands in for the release and the intro chapter runs
# against it with an empty checkpoint cache. Fails if anything was trained for the chapter or a
# checksum did not hold; prints the job summary. tests/test_release_job.py runs it too.
# DRY_RUN_ARGS: e.g. --without-classifier, or --work DIR (keeps the files).
DRY_RUN_ARGS ?=
release-dry-run: data
	$(PY) -m tools.release_job dry-run $(DRY_RUN_ARGS)

# After changing repository.url in _config.yml: rewrite every chapter's Colab install cell, the
# book's address in README.md, CITATION.cff and the pretrained weights' address.
sync-repo-url: env
	$(PY) -m tools.repo_url

# ruff (lint, and the format of the files pyproject.toml does not exempt) and actionlint on
# .github/workflows. actionlint's optional shellcheck/pyflakes passes are off so that the check is
# the same on every machine, whether or not those programs are installed.
lint: env
	$(BIN)/ruff check cvae_helpers tests tools
	$(BIN)/ruff format --check cvae_helpers tests tools
	$(BIN)/actionlint -shellcheck= -pyflakes=

clean:
	$(BIN)/jupyter-book clean . || true
