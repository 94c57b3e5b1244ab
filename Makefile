# Mail Lab: the two commands of the README, and their parts.
#
#   make lab          set up (once) and open JupyterLab on the tutorial, embedded mode
#   make test         set up (once) and run every test: unit, servers, CLI, every notebook
#   make test-fast    the tests without the notebooks (either edition) and the container image
#   make lock         bring requirements.lock (and its copies) in step with pyproject.toml,
#                     keeping every pin it can (make lock UPGRADE=1: newest releases allowed)
#   make test-latest  the suite in a throw-away venv of the newest releases pyproject allows
#   make i18n         labkit's messages: extract them, merge them into each .po, compile the .mo
#   make student      the student edition: student/NN_*.ipynb, worked answers taken out (nbgrader)
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
# three workers: most tests wait on sockets and daemons; a notebook's cells (and each test file)
# stay on one worker, in order (--dist loadfile). PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 3
PYTEST := -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile
# npm packages (the book's Mermaid, the classroom's proxy) and the classroom's venv: see below
NODE_STAMP := node_modules/.package-lock.json
CLASSROOM_PYTHON ?= /usr/bin/python3
CLASSROOM_VENV := classroom/.venv
CLASSROOM_STAMP := $(CLASSROOM_VENV)/.installed

.PHONY: lab test test-fast test-latest student lock system-packages browser-packages node-packages book classroom classroom-venv bench reliability ladder density clean help docker docker-smoke i18n

help:
	@sed -n '2,18p' Makefile | sed 's/^# \{0,1\}//'

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
	  --deselect tests/test_student_edition.py::test_every_checker_fails_unanswered_and_says_why \
	  --deselect tests/test_book.py::test_every_page_in_chromium \
	  --deselect tests/test_classroom.py::test_ten_learners_each_with_their_own_lab $(PYTEST_ARGS) tests

# The student edition: nbgrader's preprocessors replace each worked answer with an empty answer cell.
student: $(STAMP)
	$(BIN)/python scripts/student.py --out student

# The lock: pyproject.toml keeps ranges; requirements.lock pins every package with its hashes.
# binder/requirements.txt is a copy of it; environment.yml's pip section carries the same pins.
lock:
	@test -x .venv-lock/bin/uv || { $(PYTHON) -m venv .venv-lock && \
	  .venv-lock/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION); }
	.venv-lock/bin/uv pip compile pyproject.toml --extra lab --extra test --extra teach --extra book --extra classroom --universal \
	  --python-version 3.10 --generate-hashes $(if $(UPGRADE),--upgrade) --quiet -o $(LOCK)
	cp $(LOCK) binder/requirements.txt
	$(PYTHON) scripts/sync-environment.py

# The newest releases pyproject.toml allows, in a throw-away venv: what the next lock would bring.
test-latest: system-packages
	@rm -rf .venv-latest && $(PYTHON) -m venv .venv-latest
	@echo "installing the newest releases pyproject.toml allows into .venv-latest"
	@.venv-latest/bin/python -m pip install --quiet --disable-pip-version-check --upgrade -e '.[lab,test,teach,book,classroom]' 2>&1 \
	  | grep -v -e "^WARNING: Location" -e "DEPRECATION: .* legacy .setup.py install" || true
	@.venv-latest/bin/python -m pip list --format=freeze 2>/dev/null \
	  | grep -iE '^(cryptography|dnspython|aiosmtpd|dkimpy|pyspf|authheaders|checkdmarc|jupyterlab|nbval|pytest)=='
	.venv-latest/bin/python $(PYTEST) $(PYTEST_ARGS) tests notebooks; rc=$$?; rm -rf .venv-latest; exit $$rc

# labkit's messages in other languages (gettext, with Babel's pybabel): what labkit shows the
# reader is marked _() or N_(); the catalogues are labkit/locale/LANG/LC_MESSAGES/labkit.po,
# compiled to labkit.mo (both committed; tests/test_i18n.py checks the .mo is current; the .pot
# template in between is made afresh each time and not kept).
LOCALE := labkit/locale
i18n: $(STAMP)
	$(BIN)/pybabel --quiet extract --no-location --sort-output -k N_ --project=labkit --version=0.1.0 \
	  -o $(LOCALE)/labkit.pot labkit
	$(BIN)/pybabel --quiet update -i $(LOCALE)/labkit.pot -d $(LOCALE) -D labkit --ignore-obsolete --no-fuzzy-matching \
	  --ignore-pot-creation-date
	$(BIN)/pybabel compile -d $(LOCALE) -D labkit --statistics

# npm packages (package-lock.json): Mermaid for the book, configurable-http-proxy for the classroom.
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

# The reliability table of issue 13: relay, smuggling, faults survived, load, bad inputs (a few minutes).
reliability: system-packages $(STAMP)
	$(BIN)/python bench/reliability.py

# msg/s of smtp-sink, a bare aiosmtpd sink, the lab's MTA and provider, real Postfix (as root)
ladder: $(STAMP)
	$(BIN)/python bench/ladder.py

# N labs on one host (start, RSS, PSS, one message each); memory after many messages; a big mailbox
density: $(STAMP)
	$(BIN)/python bench/classroom_density.py

clean:
	rm -rf $(VENV) $(CLASSROOM_VENV) .venv-lock .venv-latest mail-lab .pytest_cache book/_build test-artifacts
