# Two commands do all the setup on a fresh clone (see README.md):
#   make book   - the main job: full budget, executes every chapter, writes the HTML book
#   make test   - unit tests, every chapter under nbmake (quick), and `jupyter-book build -W` (quick)
# Both create the virtual environment if it is missing and find or download MNIST.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# torch/torchvision the way this machine needs them; override for another platform, e.g.
#   make test TORCH_SPEC="torch torchvision"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
CHAPTERS := $(sort $(wildcard book/[0-9]*.ipynb)) book/intro.ipynb

.PHONY: book test env data unit notebooks book-quick clean lint

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Finds MNIST under $CVAE_DATA_DIR (else ./data), or downloads it there through torchvision.
data: env
	$(PY) -c "from cvae_helpers.data import load_mnist; load_mnist(train=True); load_mnist(train=False); print('MNIST ready')"

book: data
	$(BIN)/jupyter-book clean .
	CVAE_PROFILE=full $(BIN)/jupyter-book build -W --keep-going .
	@echo "Open _build/html/index.html"

test: unit notebooks book-quick

unit: data
	$(BIN)/pytest tests

notebooks: data
	CVAE_PROFILE=quick $(BIN)/pytest --nbmake --nbmake-timeout=1800 $(CHAPTERS)

book-quick: data
	$(BIN)/jupyter-book clean .
	CVAE_PROFILE=quick $(BIN)/jupyter-book build -W --keep-going .

lint: env
	$(BIN)/ruff check cvae_helpers tests

clean:
	$(BIN)/jupyter-book clean . || true
