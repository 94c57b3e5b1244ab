"""The project's own promises about its files: environments agree, notebooks carry no outputs."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "notebooks" / "ja").glob("*.ipynb"))
# Each edition's headings for the end of a chapter (notebooks/ja/: the Japanese edition).
CLOSING = {"notebooks": ("## Summary", "## Exercises"), "ja": ("## まとめ", "## 演習")}


def _nb_id(path: Path) -> str:
    return str(path.relative_to(ROOT / "notebooks"))


SCRIPTS = ROOT / "scripts"
LOCK = ROOT / "requirements.lock"


def _norm(req: str) -> tuple[str, str]:
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert m, req
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _sync_environment():
    spec = importlib.util.spec_from_file_location("sync_environment", SCRIPTS / "sync-environment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pyproject_requirements() -> list[str]:
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = py["optional-dependencies"]
    return py["dependencies"] + [r for name in ("lab", "test", "book", "classroom") for r in extras[name]]


def test_pyproject_keeps_ranges_and_the_lock_pins_them_with_hashes():
    lock = LOCK.read_text()
    pins = _sync_environment().locked_pins(lock)
    locked = {_norm(p.split("==")[0])[0] for p in pins}
    for req in _pyproject_requirements():
        name, spec = _norm(req)
        assert not spec.startswith("=="), f"pyproject.toml pins {req}: keep a range there, the pin in the lock"
        assert name in locked, f"{name} is in pyproject.toml but not in requirements.lock: run make lock"
    for pin in pins:
        assert re.match(r"^[a-z0-9][a-z0-9._-]*==[^ ;]+( ; .+)?$", pin), f"not an exact pin: {pin}"
    hashes: dict[str, int] = {}
    current = ""
    for line in lock.splitlines():
        if re.match(r"[a-z0-9]", line):
            current = line.split()[0]
            hashes[current] = 0
        elif "--hash=sha256:" in line:
            hashes[current] += 1
    without_hash = [pin for pin, n in hashes.items() if n == 0]
    assert not without_hash, f"pins without a hash: {without_hash}"


def test_environment_yml_carries_the_lock():
    sync = _sync_environment()
    text = (ROOT / "environment.yml").read_text()
    assert "--no-deps" not in text, "pip accepts no option lines in a requirements file from conda"
    assert sync.environment_pins(text) == sync.locked_pins(LOCK.read_text()), "run: make lock"
    assert text.rstrip().endswith("- -e ."), "the project itself is installed last"


def test_binder_installs_the_lock_and_the_one_package_list():
    binder = ROOT / "binder"
    assert (binder / "requirements.txt").read_text() == LOCK.read_text(), "binder/requirements.txt is a copy of the lock: make lock"
    assert re.fullmatch(r"python-3\.1[0-9]\n", (binder / "runtime.txt").read_text())
    post = (binder / "postBuild").read_text()
    assert "pip install --no-deps -e ." in post and "00_welcome.ipynb" in post
    assert os.access(binder / "postBuild", os.X_OK)
    script = (SCRIPTS / "install-system-packages.sh").read_text()
    block = script[script.index("PACKAGES=(") + len("PACKAGES=("):script.index("\n)\n")]
    listed = [w for line in block.splitlines() for w in line.split("#")[0].split()]
    apt = [line.strip() for line in (binder / "apt.txt").read_text().splitlines()
           if line.strip() and not line.startswith("#")]
    assert apt == listed, "binder/apt.txt and scripts/install-system-packages.sh name different packages"


def _fresh_venv_install(tmp_path: Path, *pip_args: str) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    for args in pip_args:
        done = subprocess.run([py, "-m", "pip", "install", "--quiet", "--no-compile", "--disable-pip-version-check", *args.split()],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"pip install {args} failed:\n{done.stderr[-3000:]}"
    done = subprocess.run([py, "-W", "error", "-c", "import labkit, labkit.core.auth.dmarc as d; "
                           "print(d.organizational_domain('mail.example.com'))"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "example.com", done.stderr[-3000:]


def test_binder_requirements_install_into_a_fresh_venv(tmp_path):
    _fresh_venv_install(tmp_path, "--require-hashes --no-deps -r binder/requirements.txt", "--no-deps .")


def test_environment_yml_pip_section_installs_into_a_fresh_venv(tmp_path):
    # No conda client here: the pip section is what conda hands to pip, so install it the same way.
    pins = _sync_environment().environment_pins((ROOT / "environment.yml").read_text())
    reqs = tmp_path / "conda-pip-section.txt"
    reqs.write_text("\n".join(pins + [str(ROOT)]) + "\n")
    _fresh_venv_install(tmp_path, f"-r {reqs}")


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no chapter"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_nb_id)
def test_notebook_is_committed_without_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; strip them (jupyter nbconvert --clear-output)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_nb_id)
def test_notebook_follows_the_chapter_shape(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert re.match(r"\d\d_[a-z0-9_]+\.ipynb$", path.name), "chapters are named NN_topic.ipynb"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    text = "\n".join("".join(c["source"]) for c in nb["cells"])
    assert "import *" not in text, "notebooks import explicitly, never with *"
    assert "assert " in text, "a chapter checks its results with assert"
    assert ".start()" in "".join(code[0]["source"]) or "Lab(" in "".join(code[0]["source"]), \
        "the first code cell starts the lab"
    assert ".stop()" in "".join(code[-1]["source"]), "the last code cell stops the lab"
    summary, exercises = CLOSING[path.parent.name]
    assert summary in text and exercises in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_shows_a_diagram_without_a_kernel(path):
    """At least one Mermaid picture in a Markdown cell: JupyterLab and GitHub draw it from the
    stored notebook, before (or without) anything running."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    static = [c for c in nb["cells"] if c["cell_type"] == "markdown" and "```mermaid\n" in "".join(c["source"])]
    assert static, f"{path.name}: no static Mermaid diagram in a Markdown cell"
    for cell in static:
        block = "".join(cell["source"]).split("```mermaid\n", 1)[1].split("```", 1)[0]
        assert block.split(None, 1)[0] in ("flowchart", "sequenceDiagram", "graph", "stateDiagram-v2"), block[:40]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "LABKIT_REQUIRE_REAL=1" in ci and "make test" in ci
    assert "make test" in readme and "make lab" in readme
