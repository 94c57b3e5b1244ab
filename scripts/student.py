"""Make the student edition of the tutorial: student/NN_*.ipynb, with every worked answer taken out.

    python scripts/student.py [--out student] [notebooks/NN_x.ipynb ...]     (make student)

The notebooks in notebooks/ are the instructor edition, the one CI runs: each exercise is an
*answer cell* (nbgrader metadata ``solution: true``) whose worked answer sits between
``### BEGIN SOLUTION`` and ``### END SOLUTION``, followed by a locked *check cell*
(``grade: true``) that calls ``check(...)`` and asserts the result. This script runs
nbgrader's own preprocessors over them, as ``nbgrader generate_assignment`` does, without its
course folder and database:

- ``ClearSolutions``: each solution region becomes ``# YOUR ANSWER HERE``; the lines before it
  (the names the check cell passes on, set to nothing) stay;
- ``ClearOutput``, ``LockCells`` (check cells cannot be edited or deleted),
  ``ClearHiddenTests``, ``ClearMarkScheme``, ``ComputeChecksums``, ``CheckCellMetadata``.

The answer cells are also shown (the instructor edition folds them). Everything else is the
same notebook. The student edition is not stored in git (``student/`` is ignored): make it
when you need it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
#: what an answer cell holds in the student edition, after the lines that set its names to nothing
CODE_STUB = "# YOUR ANSWER HERE"


def student_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student edition of one instructor notebook (a new object; ``nb`` is left as it was)."""
    from nbgrader.preprocessors import (CheckCellMetadata, ClearHiddenTests, ClearMarkScheme, ClearOutput,
                                        ClearSolutions, ComputeChecksums, LockCells)
    from traitlets.config import Config

    config = Config()
    config.ClearSolutions.code_stub = {"python": CODE_STUB}
    config.LockCells.lock_grade_cells = True
    config.LockCells.lock_solution_cells = False
    nb = nbformat.from_dict(nb)
    resources: dict = {}
    for step in (ClearSolutions, ClearOutput, LockCells, ClearHiddenTests, ClearMarkScheme, ComputeChecksums,
                 CheckCellMetadata):
        nb, resources = step(config=config).preprocess(nb, resources)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.metadata.get("jupyter", {}).pop("source_hidden", None)
            if not cell.metadata.get("jupyter", True):
                del cell.metadata["jupyter"]
    return nb


def build(notebooks: list[Path], out: Path) -> list[Path]:
    """Write the student edition of each of ``notebooks`` into ``out``; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        target = out / path.name
        nbformat.write(student_notebook(nb), target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="instructor notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--out", type=Path, default=ROOT / "student", help="where to write (default: student/)")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    try:
        written = build(notebooks, args.out)
    except ImportError as e:
        print(f"error: {e}; the student edition needs nbgrader: pip install -e '.[teach]' (make installs it)",
              file=sys.stderr)
        return 1
    print(f"wrote {len(written)} student notebooks to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
