#!/usr/bin/env python3
"""Keep the Japanese edition's code the same as the English edition's.

    python scripts/sync-ja.py            check: exit 1 and say where, if any code cell differs
    python scripts/sync-ja.py --write    copy each code cell of notebooks/NN.ipynb into
                                         notebooks/ja/NN.ipynb, matched by cell id

The prose (markdown cells) is each edition's own; the code cells are the same cells: same id,
same order, same source, same metadata (tags such as raises-exception or solution). The
notebook-level metadata (kernelspec, ``"labkit": {"requires": [...]}``) is the same too.
``--write`` carries English code changes over mechanically; it refuses, naming the cell, when a
code cell id is on one side only or the code cells come in another order: move or add that
cell (with its Japanese prose) by hand, then run it again. The Japanese notebooks are kept
without outputs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EN = ROOT / "notebooks"
JA = EN / "ja"


class SyncError(Exception):
    """The two editions cannot be matched cell by cell; the message says where."""


def chapters() -> list[Path]:
    """The English chapters, notebooks/NN_topic.ipynb."""
    return sorted(EN.glob("[0-9][0-9]_*.ipynb"))


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def dump(nb: dict) -> str:
    return json.dumps(nb, ensure_ascii=False, indent=1) + "\n"


def _code(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _src(cell: dict) -> str:
    s = cell.get("source", "")
    return s if isinstance(s, str) else "".join(s)


def match(en: dict, ja: dict, name: str) -> None:
    """Raise SyncError unless the code cells pair up by id, in the same order."""
    en_ids = [c.get("id") for c in _code(en)]
    ja_ids = [c.get("id") for c in _code(ja)]
    if None in en_ids or None in ja_ids:
        raise SyncError(f"{name}: a code cell has no id (nbformat 4.5 cell ids are needed to match cells)")
    only_en = [i for i in en_ids if i not in ja_ids]
    only_ja = [i for i in ja_ids if i not in en_ids]
    if only_en:
        raise SyncError(f"{name}: code cell(s) {only_en} are in notebooks/{name} but not in "
                        f"notebooks/ja/{name}; add them there (with their Japanese prose), then run --write")
    if only_ja:
        raise SyncError(f"{name}: code cell(s) {only_ja} are in notebooks/ja/{name} but not in "
                        f"notebooks/{name}; remove them from the Japanese edition")
    if en_ids != ja_ids:
        at = next(k for k, (a, b) in enumerate(zip(en_ids, ja_ids)) if a != b)
        raise SyncError(f"{name}: code cells come in another order (code cell #{at}: {en_ids[at]} in "
                        f"English, {ja_ids[at]} in Japanese); reorder notebooks/ja/{name} by hand")


def differences(en: dict, ja: dict, name: str) -> list[str]:
    """What differs between the editions' code (empty: they agree). Raises SyncError if unmatched."""
    match(en, ja, name)
    out = []
    for a, b in zip(_code(en), _code(ja)):
        if _src(a) != _src(b):
            out.append(f"{name}: code cell {a['id']}: the source differs")
        if a.get("metadata", {}) != b.get("metadata", {}):
            out.append(f"{name}: code cell {a['id']}: the cell metadata differs")
        if b.get("outputs") or b.get("execution_count") is not None:
            out.append(f"{name}: code cell {b['id']}: the Japanese edition carries outputs")
    if en.get("metadata", {}) != ja.get("metadata", {}):
        out.append(f"{name}: the notebook metadata differs")
    return out


def synced(en: dict, ja: dict, name: str) -> dict:
    """The Japanese notebook with every code cell (and the notebook metadata) taken from English."""
    match(en, ja, name)
    by_id = {c["id"]: c for c in _code(en)}
    cells = []
    for cell in ja["cells"]:
        if cell["cell_type"] == "code":
            src = by_id[cell["id"]]
            cell = {"cell_type": "code", "execution_count": None, "id": src["id"],
                    "metadata": json.loads(json.dumps(src.get("metadata", {}))), "outputs": [],
                    "source": src["source"]}
        cells.append(cell)
    return {**ja, "cells": cells, "metadata": en.get("metadata", {})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true",
                        help="copy the English code cells into notebooks/ja/ (by cell id)")
    args = parser.parse_args(argv)
    problems = []
    for path in chapters():
        target = JA / path.name
        if not target.exists():
            problems.append(f"{path.name}: no Japanese edition (notebooks/ja/{path.name}); "
                            "copy the English notebook there and translate its markdown cells")
            continue
        en, ja = load(path), load(target)
        try:
            if args.write:
                new = dump(synced(en, ja, path.name))
                if new != target.read_text(encoding="utf-8"):
                    target.write_text(new, encoding="utf-8")
                    print(f"updated notebooks/ja/{path.name}")
            else:
                problems += differences(en, ja, path.name)
        except SyncError as e:
            problems.append(str(e))
    for extra in sorted(set(p.name for p in JA.glob("*.ipynb")) - set(p.name for p in chapters())):
        problems.append(f"{extra}: in notebooks/ja/ but not in notebooks/ (renamed or removed?)")
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems and not args.write:
        print("run: python scripts/sync-ja.py --write (carries English code cells over by id)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
