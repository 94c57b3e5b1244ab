# Mail Lab: the two commands of the README, and their parts.
#
#   make lab    set up (once) and open JupyterLab on the tutorial, embedded mode
#   make test   set up (once) and run every test: unit, servers, CLI, and every notebook
#
# As root, `make test` first installs the Debian packages real mode needs
# (scripts/install-system-packages.sh). LABKIT_REQUIRE_REAL=1 (set by .ci/run) turns a missing
# real daemon or tool into a failure instead of a skip.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: lab test system-packages bench clean help docker docker-smoke

help:
	@sed -n '2,10p' Makefile | sed 's/^# \{0,1\}//'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
	  { echo "error: Python 3.10 or newer is needed ($(PYTHON) is older); set PYTHON=..." >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || \
	  { echo "error: could not make a virtual environment; on Debian: sudo apt-get install python3-venv" >&2; exit 1; }
	@echo "setting up $(VENV) (pip install -e '.[lab,test]'; about 30 s the first time)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[lab,test]' 2>&1 \
	  | grep -v "^WARNING: Location" || true
	@$(BIN)/python -c 'import labkit, aiosmtpd, dns, jupyterlab, nbval' || \
	  { echo "error: the install into $(VENV) did not complete; run make again and read pip's output" >&2; exit 1; }
	@touch $(STAMP)

system-packages:
	@if [ "$$(id -u)" = 0 ]; then bash scripts/install-system-packages.sh; \
	else bash scripts/install-system-packages.sh --check || \
	  echo "note: not root, so real-mode tests will skip (run: sudo scripts/install-system-packages.sh)"; fi

lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) \
	  notebooks/00_welcome.ipynb

test: system-packages $(STAMP)
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider $(PYTEST_ARGS) tests notebooks

docker:
	docker compose -f docker/compose.yaml up --build

docker-smoke:
	bash scripts/docker-smoke.sh

bench: $(STAMP)
	$(BIN)/python bench/bench_lab.py

clean:
	rm -rf $(VENV) mail-lab .pytest_cache
