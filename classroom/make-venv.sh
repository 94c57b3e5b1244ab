#!/usr/bin/env bash
# Make classroom/.venv: the Python environment learners' JupyterLab and kernels run from. It
# must be one every user can run (a Python under /root, 0700, is not), so it is made with the
# system's Python (CLASSROOM_PYTHON, default /usr/bin/python3).
#
# Usage: classroom/make-venv.sh CLASSROOM_PYTHON MAIN_VENV LOCK
#
# When the project's venv (MAIN_VENV, made by `make` from requirements.lock) has the same Python
# minor version, the classroom venv uses its packages instead of installing the lock again
# (CPython keeps one ABI for a minor version, so its compiled wheels serve both): a venv without
# pip whose site-packages adds MAIN_VENV's, and MAIN_VENV's share/ (JupyterLab's assets, the
# kernel spec) and etc/ (server extensions). A few seconds instead of a few minutes. Otherwise it
# installs LOCK (hashes checked) and the project into it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$1 MAIN=$2 LOCK=$3
VENV=classroom/.venv

minor() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }
rm -rf "$VENV"
if [ -x "$MAIN/bin/python" ] && [ "$(minor "$PY")" = "$(minor "$MAIN/bin/python")" ]; then
  "$PY" -m venv --without-pip "$VENV"
  main_site=$("$MAIN/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "import site; site.addsitedir('$(realpath "$main_site")')" > "$site/mail-lab-main-venv.pth"
  for d in share etc; do [ -d "$MAIN/$d" ] && ln -s "$(realpath "$MAIN/$d")" "$VENV/$d"; done
  echo "classroom/.venv: $PY with the packages of $MAIN (same Python $(minor "$PY"))"
else
  "$PY" -m venv "$VENV"
  echo "classroom/.venv: installing $LOCK with $PY (hashes checked)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r "$LOCK" 2>&1 \
    | grep -v -e "^WARNING: Location" -e "DEPRECATION: .* legacy .setup.py install" || true
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e . 2>&1 \
    | grep -v -e "^WARNING: Location" -e "DEPRECATION: .* legacy .setup.py install" || true
fi
# The commands the hub needs, run by the classroom's Python whichever way it was made.
# (labkit too: learners' terminals have this bin folder first on their PATH.)
for cmd in jupyterhub jupyterhub-singleuser labkit; do
  mod=$cmd
  [ "$cmd" = jupyterhub-singleuser ] && mod=jupyterhub.singleuser
  printf '#!/bin/sh\nexec "%s" -m %s "$@"\n' "$(realpath "$VENV")/bin/python" "$mod" > "$VENV/bin/$cmd.new"
  chmod 755 "$VENV/bin/$cmd.new" && mv "$VENV/bin/$cmd.new" "$VENV/bin/$cmd"
done
"$VENV/bin/python" -c 'import labkit, jupyterhub, jupyterlab, ipykernel' \
  || { echo "error: classroom/.venv cannot import labkit and JupyterHub" >&2; exit 1; }
