"""The student edition (make student): every exercise is earned.

The instructor notebooks (what nbval runs) hold a worked answer in each answer cell, and their
check cells assert that the checker passes with it. Here the student edition is made with
nbgrader's preprocessors (scripts/student.py), then every student notebook is run as a learner
who answers nothing would run it: every check cell must fail, with the checker's reason (an
AssertionError whose message says what is missing), and nothing else may break.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import time
from pathlib import Path

import pytest

from conftest import REQUIRE_REAL
from labkit.teach.exercises import keys

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
KEY = re.compile(r'check\("(\d\d\.\d+)"')


def _student_module():
    spec = importlib.util.spec_from_file_location("student", ROOT / "scripts" / "student.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def student():
    pytest.importorskip("nbgrader", reason="the student edition needs nbgrader (pip install -e '.[teach]')")
    return _student_module()


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _chapter_keys(path: Path) -> list[str]:
    return [k for k in keys() if k.startswith(path.name[:2] + ".")]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_exercise_is_an_answer_cell_then_a_locked_check(path, student):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    checks = {}
    for i, cell in enumerate(nb.cells):
        meta = _nbgrader(cell)
        if meta.get("grade"):
            found = KEY.findall(cell.source)
            assert len(found) == 1, f"{path.name} cell {cell.id}: a check cell checks one exercise"
            checks[found[0]] = cell
            answer = nb.cells[i - 1]
            assert _nbgrader(answer).get("solution"), f"{path.name} cell {cell.id}: no answer cell before it"
            assert "### BEGIN SOLUTION" in answer.source and "### END SOLUTION" in answer.source
            assert f"assert result_{found[0].split('.')[1]}.ok, result_" in cell.source, \
                "the check cell asserts the checker passed, and shows its reason when not"
        elif cell.cell_type == "code":
            assert not KEY.search(cell.source), \
                f"{path.name} cell {cell.id}: check(...) belongs in the check cell, not in {cell.source[:60]!r}"
    assert sorted(checks) == _chapter_keys(path), f"{path.name}: every exercise of the chapter has its check cell"

    edition = student.student_notebook(nb)
    assert [c.id for c in edition.cells] == [c.id for c in nb.cells]
    for mine, theirs in zip(nb.cells, edition.cells):
        if _nbgrader(mine).get("solution"):
            assert "SOLUTION" not in theirs.source and student.CODE_STUB in theirs.source
            before = mine.source.split("### BEGIN SOLUTION")[0]
            assert theirs.source.startswith(before), "the lines before the solution stay for the learner"
        else:
            assert theirs.source == mine.source, f"{path.name} cell {mine.id} changed in the student edition"
        if _nbgrader(mine).get("grade"):
            assert theirs.metadata.get("editable") is False and theirs.metadata.get("deletable") is False


def _needs_real(path: Path) -> bool:
    meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    return bool(meta.get("labkit", {}).get("requires"))


def _real_available() -> bool:
    import shutil

    return os.geteuid() == 0 and all(shutil.which(t) or os.path.exists(f"/usr/sbin/{t}")
                                     for t in ("postfix", "postconf", "postmap", "opendkim", "dovecot"))


def test_every_checker_fails_unanswered_and_says_why(student, tmp_path):
    """Run each student notebook top to bottom with nothing answered (one kernel per chapter)."""
    import nbformat
    from nbclient import NotebookClient
    from traitlets.config import Config

    real = _real_available()
    if not real and REQUIRE_REAL:
        pytest.fail("real daemons are missing and LABKIT_REQUIRE_REAL=1 forbids skipping their chapters")
    chapters = [p for p in NOTEBOOKS if real or not _needs_real(p)]
    problems: list[str] = []
    failed_as_they_must: dict[str, str] = {}
    times: dict[str, float] = {}
    for path in chapters:
        nb = student.student_notebook(nbformat.read(path, as_version=4))
        started = time.monotonic()
        # one kernel per chapter, on unix sockets: no TCP port to race other programs for
        ipc = Config({"KernelManager": {"transport": "ipc", "ip": str(tmp_path / f"kernel-{path.name[:2]}")}})
        NotebookClient(nb, kernel_name="python3", config=ipc, timeout=300, allow_errors=True,
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
        times[path.name] = time.monotonic() - started
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            errors = [o for o in cell.outputs if o.output_type == "error"]
            if _nbgrader(cell).get("grade"):
                key = KEY.search(cell.source).group(1)
                if not errors:
                    problems.append(f"{key} passed unanswered ({path.name}, cell {cell.id})")
                elif errors[0].ename != "AssertionError" or not errors[0].evalue.strip():
                    problems.append(f"{key} did not fail with the checker's reason: {errors[0].ename}: "
                                    f"{errors[0].evalue} ({path.name}, cell {cell.id})")
                else:
                    failed_as_they_must[key] = errors[0].evalue
            elif errors and "raises-exception" not in cell.metadata.get("tags", []):
                problems.append(f"{path.name} cell {cell.id} broke in the student edition: "
                                f"{errors[0].ename}: {errors[0].evalue}")
    print("student notebooks, seconds:", {k: round(v, 1) for k, v in times.items()}, round(sum(times.values()), 1))
    assert not problems, "\n".join(problems)
    want = [k for p in chapters for k in _chapter_keys(p)]
    assert sorted(failed_as_they_must) == sorted(want)
    vague = {k: r for k, r in failed_as_they_must.items() if len(r) < 25}
    assert not vague, f"reasons too short to tell a learner what is missing: {vague}"
