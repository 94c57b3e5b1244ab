"""The project's own promises about its files: environments agree, notebooks carry no outputs."""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _norm(req: str) -> tuple[str, str]:
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert m, req
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_environment_yml_agrees_with_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_norm(r) for r in py["dependencies"])
    for extra in ("lab", "test"):
        wanted.update(_norm(r) for r in py["optional-dependencies"][extra])
    conda = {}
    text = (ROOT / "environment.yml").read_text()
    for line in text[text.index("\ndependencies:"):].splitlines():
        m = re.match(r"^  - ([A-Za-z][^\s#]*)\s*$", line)
        if m and not m.group(1).startswith(("python", "pip")):
            name, spec = _norm(m.group(1))
            conda[name] = spec
    assert conda == wanted, "environment.yml and pyproject.toml name different packages or versions"


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no chapter"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; strip them (jupyter nbconvert --clear-output)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
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
    assert "## Summary" in text and "## Exercises" in text


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "LABKIT_REQUIRE_REAL=1" in ci and "make test" in ci
    assert "make test" in readme and "make lab" in readme
