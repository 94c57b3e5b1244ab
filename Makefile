# Mail Lab: the two commands of the README, and their parts.
#
#   make lab          set up (once) and open JupyterLab on the tutorial, embedded mode
#   make test         set up (once) and run every test: unit, servers, CLI, every notebook
#   make test-fast    the tests without the notebooks and the container image (a few minutes)
#   make lock         bring requirements.lock (and its copies) in step with pyproject.toml,
#                     keeping every pin it can (make lock UPGRADE=1: newest releases allowed)
#   make test-latest  the suite in a throw-away venv of the newest releases pyproject allows
#   make book         every chapter executed and rendered offline into book/_build/html
#   make classroom    JupyterHub on 127.0.0.1:8000, a JupyterLab per learner (root; classroom/)
#
# Set-up installs exactly the versions in requirements.lock (hashes checked), and the npm
# packages of package-lock.json (npm ci). As root, `make test` first installs the Debian
# packages real mode needs (scripts/install-system-packages.sh) and Chromium for the book's
# browser test (scripts/install-browser-packages.sh). LABKIT_REQUIRE_REAL=1 (set by .ci/run)
# turns a missing real daemon or tool into a failure instead of a skip.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
LOCK   := requirements.lock
# uv resolves the lock (one universal file for Python 3.10+ on every platform); plain pip installs it.
UV_VERSION ?= 0.13.9
UPGRADE ?=
PYTEST := -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider

.PHONY: lab test test-fast test-latest lock system-packages browser-packages node-packages book classroom classroom-venv bench clean help docker docker-smoke

help:
	@sed -n '2,16p' Makefile | sed 's/^# \{0,1\}//'

$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
	  { echo "error: Python 3.10 or newer is needed ($(PYTHON) is older); set PYTHON=..." >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || \
	  { echo "error: could not make a virtual environment; on Debian: sudo apt-get install python3-venv" >&2; exit 1; }
	@echo "setting up $(VENV) from $(LOCK): exact versions, hashes checked (about a minute the first time)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r $(LOCK) 2>&1 \
	  | grep -v -e "^WARNING: Location" -e "DEPRECATION: .* legacy .setup.py install" || true
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e . 2>&1 \
	  | grep -v -e "^WARNING: Location" -e "DEPRECATION: .* legacy .setup.py install" || true
	@$(BIN)/python -m pip check >/dev/null && $(BIN)/python -c 'import labkit, aiosmtpd, dns, jupyterlab, nbval' || \
	  { echo "error: the install into $(VENV) did not complete; run make again and read pip's output" >&2; exit 1; }
	@touch $(STAMP)

system-packages:
	@if [ "$$(id -u)" = 0 ]; then bash scripts/install-system-packages.sh; \
	else bash scripts/install-system-packages.sh --check || \
	  echo "note: not root, so real-mode tests will skip (run: sudo scripts/install-system-packages.sh)"; fi

# Chromium and a CJK font for the book's browser test (not real mode's list: that one is binder/apt.txt).
browser-packages:
	@if [ "$$(id -u)" = 0 ]; then bash scripts/install-browser-packages.sh; \
	else bash scripts/install-browser-packages.sh --check || \
	  echo "note: not root, so the browser test will skip (run: sudo scripts/install-browser-packages.sh)"; fi

lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) \
	  notebooks/00_welcome.ipynb

test: system-packages browser-packages $(STAMP) $(NODE_STAMP) $(CLASSROOM_STAMP)
	$(BIN)/python $(PYTEST) $(PYTEST_ARGS) tests notebooks

test-fast: $(STAMP)
	$(BIN)/python $(PYTEST) --deselect tests/test_docker.py::test_image_builds_and_delivers_for_real \
	  --deselect tests/test_book.py::test_every_page_in_chromium \
	  --deselect tests/test_classroom.py::test_ten_learners_each_with_their_own_lab $(PYTEST_ARGS) tests

# The lock: pyproject.toml keeps ranges; requirements.lock pins every package with its hashes.
# binder/requirements.txt is a copy of it; environment.yml's pip section carries the same pins.
lock:
	@test -x .venv-lock/bin/uv || { $(PYTHON) -m venv .venv-lock && \
	  .venv-lock/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION); }
	.venv-lock/bin/uv pip compile pyproject.toml --extra lab --extra test --extra book --extra classroom --universal \
	  --python-version 3.10 --generate-hashes $(if $(UPGRADE),--upgrade) --quiet -o $(LOCK)
	cp $(LOCK) binder/requirements.txt
	$(PYTHON) scripts/sync-environment.py

# The newest releases pyproject.toml allows, in a throw-away venv: what the next lock would bring.
test-latest: system-packages
	@rm -rf .venv-latest && $(PYTHON) -m venv .venv-latest
	@echo "installing the newest releases pyproject.toml allows into .venv-latest"
	@.venv-latest/bin/python -m pip install --quiet --disable-pip-version-check --upgrade -e '.[lab,test]' 2>&1 \
	  | grep -v -e "^WARNING: Location" -e "DEPRECATION: .* legacy .setup.py install" || true
	@.venv-latest/bin/python -m pip list --format=freeze 2>/dev/null \
	  | grep -iE '^(cryptography|dnspython|aiosmtpd|dkimpy|pyspf|authheaders|checkdmarc|jupyterlab|nbval|pytest)=='
	.venv-latest/bin/python $(PYTEST) $(PYTEST_ARGS) tests notebooks; rc=$$?; rm -rf .venv-latest; exit $$rc

# npm packages (package-lock.json): Mermaid for the book, configurable-http-proxy for the classroom.
NODE_STAMP := node_modules/.package-lock.json
$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { echo "error: npm is needed (Debian: sudo apt-get install nodejs npm)" >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)
node-packages: $(NODE_STAMP)

# The book: every chapter executed (in parallel: BOOK_JOBS), rendered offline into book/_build/html.
book: $(STAMP) $(NODE_STAMP)
	$(BIN)/python book/build.py

# The classroom: JupyterHub, each learner's JupyterLab as that learner (classroom/README.md).
# Its own venv from a Python every learner can run (the system's; a Python under /root is not),
# with the packages of the lock (classroom/make-venv.sh).
CLASSROOM_PYTHON ?= /usr/bin/python3
CLASSROOM_VENV := classroom/.venv
CLASSROOM_STAMP := $(CLASSROOM_VENV)/.installed
$(CLASSROOM_STAMP): pyproject.toml $(LOCK) $(STAMP) classroom/make-venv.sh
	@bash classroom/make-venv.sh $(CLASSROOM_PYTHON) $(VENV) $(LOCK)
	@touch $(CLASSROOM_STAMP)
classroom-venv: $(CLASSROOM_STAMP)

classroom: $(CLASSROOM_STAMP) $(NODE_STAMP)
	@[ "$$(id -u)" = 0 ] || { echo "error: the hub starts each learner's JupyterLab as that learner: run as root" >&2; exit 1; }
	$(CLASSROOM_VENV)/bin/jupyterhub -f classroom/jupyterhub_config.py

docker:
	docker compose -f docker/compose.yaml up --build

docker-smoke:
	bash scripts/docker-smoke.sh

bench: $(STAMP)
	$(BIN)/python bench/bench_lab.py

clean:
	rm -rf $(VENV) $(CLASSROOM_VENV) .venv-lock .venv-latest mail-lab .pytest_cache book/_build test-artifacts
