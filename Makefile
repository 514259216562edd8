# The two commands a newcomer needs: `make run` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

# Settings may live in .env (see .env.example); make variables on the command line win.
-include .env

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WEIGHTS ?= imagenet
SAMPLE_MIRROR ?=
DATA ?= images/sample
CHECKPOINT ?= $(or $(CHECKPOINT_PATH),checkpoints/model.pt)
TRAIN_ARGS ?=
PYTEST_ARGS ?=
FEEDBACK_DIR ?= data/feedback
# bot settings for make demo, NAME=VALUE separated by spaces (here: a coarser fine map than the bot's 16/8)
DEMO_SETTINGS ?= WHY_PATCH=32 WHY_STRIDE=16
# e.g. https://download.pytorch.org/whl/cpu on a server: a CPU-only torch is ~0.4 GB lighter in memory
TORCH_INDEX ?=

.PHONY: run test train sample install install-server export catalogs translations demo bench feedback-report clean

## run: install, fetch the sample photos, train if there is no checkpoint, start the bot
run: install sample
	@if [ ! -f "$(CHECKPOINT)" ]; then $(MAKE) --no-print-directory train; else echo "using $(CHECKPOINT)"; fi
	@if [ ! -f .env ]; then cp .env.example .env; echo "created .env from .env.example: put your bot token in it"; fi
	CHECKPOINT_PATH="$(CHECKPOINT)" $(PY) -m bot

## test: install, lint (ruff, settings in pyproject.toml), run every test
test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

## train: build $(CHECKPOINT) from $(DATA) (WEIGHTS=imagenet|none|/path/to/resnet50.pth)
train: install
	$(PY) -m training --data "$(DATA)" --out "$(CHECKPOINT)" --weights "$(WEIGHTS)" $(TRAIN_ARGS)

## sample: the seed project's 20 photos into images/sample (SAMPLE_MIRROR=DIR copies from a local folder)
sample: install
	$(PY) -m training.sample --dest images/sample $(if $(SAMPLE_MIRROR),--mirror "$(SAMPLE_MIRROR)")

## install: a venv with the project and its dev extras (skipped while the venv is newer than pyproject.toml),
## and the translation catalogs compiled
install: $(STAMP) catalogs

## install-server: the small-server venv $(SERVER_VENV): the base install (pip install .), no torch: the bot
## serving the OpenVINO export beside $(CHECKPOINT) (make export writes it; README "On a small server")
SERVER_VENV ?= .venv-server
install-server:
	@test -x $(SERVER_VENV)/bin/python || $(PYTHON) -m venv $(SERVER_VENV)
	$(SERVER_VENV)/bin/python -m pip install --disable-pip-version-check -q . 2>&1 | { grep -v "^WARNING: Location" || true; }
	$(SERVER_VENV)/bin/python -m bot.i18n compile
	@$(SERVER_VENV)/bin/python -c "import importlib.util as u; assert u.find_spec('torch') is None, 'torch got into $(SERVER_VENV)'"
	@du -sh $(SERVER_VENV)

## export: the OpenVINO export beside $(CHECKPOINT) (python -m training writes it too), for install-server's venv
export: install
	$(PY) -m model export --checkpoint "$(CHECKPOINT)"

## catalogs: compile bot/locale/*/LC_MESSAGES/bot.po to .mo (only the missing or stale ones)
catalogs: $(STAMP)
	$(PY) -m bot.i18n compile

## translations: extract the bot's texts into bot/locale/bot.pot and merge them into every language's .po
translations: $(STAMP)
	$(VENV)/bin/pybabel extract --no-location --sort-output --project product-id-bot -c "Translators:" -o bot/locale/bot.pot bot
	$(VENV)/bin/pybabel update --width 120 -i bot/locale/bot.pot -d bot/locale -D bot

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ -n "$(TORCH_INDEX)" ]; then $(PY) -m pip install --disable-pip-version-check -q --index-url "$(TORCH_INDEX)" torch torchvision; fi
	@echo "installing into $(VENV) (the first time takes minutes: torch is large)"
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]' 2>&1 | { grep -v "^WARNING: Location" || true; }
	@touch $(STAMP)

## demo: the bot in a scripted chat against a local fake Telegram (no token, no network); saves its heat map
demo: install
	@if [ ! -f "$(CHECKPOINT)" ]; then echo "no $(CHECKPOINT): run make train first (or make run)"; exit 2; fi
	$(PY) tools/transcript.py --checkpoint "$(CHECKPOINT)" --heat-map images/demo-why.png $(foreach s,$(DEMO_SETTINGS),--set "$(s)")

## feedback-report: live accuracy per class from the users' Right/Wrong answers (FEEDBACK_DIR)
feedback-report: install
	$(PY) -m training.feedback report --inbox "$(FEEDBACK_DIR)"

## bench: the benchmark scripts (numbers, not pass/fail)
bench: install
	for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
