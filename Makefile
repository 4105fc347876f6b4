# Two commands do all the setup on a fresh clone (see README.md):
#   make book   - the main job: full budget, executes every chapter, writes the HTML book
#   make test   - ruff, unit tests, every chapter under nbmake (quick), `jupyter-book build -W` (quick)
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

.PHONY: book test env data unit notebooks book-quick reference sync-repo-url lint clean

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
	@echo "Open _build/html/index.html"

test: lint unit notebooks book-quick

unit: data
	$(BIN)/pytest tests

notebooks: data
	CVAE_PROFILE=quick $(BIN)/pytest --nbmake --nbmake-timeout=1800 $(CHAPTERS)

book-quick: data
	$(BIN)/jupyter-book clean .
	CVAE_PROFILE=quick $(BIN)/jupyter-book build -W --keep-going .

# The committed full-budget reference results (results/reference/README.md): both decoders,
# seed 0, timed with /usr/bin/time -v, then the completion grids, the speed benchmark, the
# controlled baseline comparison (tools/baseline_gap.py) and the report (timings.json, README).
reference: data
	mkdir -p $(REF)/logs
	date -u +%FT%TZ > $(REF)/logs/started.txt
	/usr/bin/time -v -o $(REF)/logs/time_p_y_given_z.txt $(PY) -m cvae_helpers train \
	  --profile full --seed 0 --output $(REF)/p_y_given_z --no-progress
	/usr/bin/time -v -o $(REF)/logs/time_p_y_given_xz.txt $(PY) -m cvae_helpers train \
	  --profile full --seed 0 --decoder-sees-input --output $(REF)/p_y_given_xz --no-progress
	$(PY) -m cvae_helpers figures --profile full --seed 0 --output $(REF)/p_y_given_z
	$(PY) -m cvae_helpers figures --profile full --seed 0 --decoder-sees-input \
	  --output $(REF)/p_y_given_xz
	$(PY) -m cvae_helpers bench --pipeline both --batches 100 > $(REF)/bench.json
	$(PY) -m tools.baseline_gap --quadrants 1 2 3 --output $(REF)/baseline_gap.json
	$(PY) -m tools.reference_report --dir $(REF)

# After changing repository.url in _config.yml: rewrite every chapter's Colab install cell.
sync-repo-url: env
	$(PY) -m tools.repo_url

lint: env
	$(BIN)/ruff check cvae_helpers tests tools

clean:
	$(BIN)/jupyter-book clean . || true
