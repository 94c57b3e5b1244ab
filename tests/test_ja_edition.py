"""The Japanese edition (notebooks/ja/, README.ja.md) keeps up with the English one.

The code cells are the same cells in both editions (scripts/sync-ja.py carries English code
changes over); every chapter has its Japanese notebook; the prose is Japanese; the README's two
commands are the same in both languages.
"""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EN = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
JA_DIR = ROOT / "notebooks" / "ja"
JA = sorted(JA_DIR.glob("[0-9][0-9]_*.ipynb"))

# Hiragana, katakana (with the prolonged sound mark) and CJK ideographs.
JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]")
ENGLISH_WORDS = re.compile(r"\b[A-Za-z]{2,}\b(?:[\s,;:.]+\b[A-Za-z]{2,}\b){2,}")


def _sync():
    spec = importlib.util.spec_from_file_location("sync_ja", ROOT / "scripts" / "sync-ja.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_every_chapter_has_a_japanese_edition():
    assert EN, "notebooks/ holds no chapter"
    missing = [p.name for p in EN if not (JA_DIR / p.name).exists()]
    assert not missing, f"no Japanese edition in notebooks/ja/ for {missing}"
    extra = sorted({p.name for p in JA_DIR.glob("*.ipynb")} - {p.name for p in EN})
    assert not extra, f"notebooks/ja/ has chapters notebooks/ does not: {extra}"


@pytest.mark.parametrize("ja", JA, ids=lambda p: p.name)
def test_code_cells_are_the_english_cells(ja):
    sync = _sync()
    en = ROOT / "notebooks" / ja.name
    assert en.exists(), f"notebooks/ja/{ja.name} has no English chapter notebooks/{ja.name}"
    diffs = sync.differences(_load(en), _load(ja), ja.name)
    assert not diffs, "\n".join(diffs) + "\nrun: python scripts/sync-ja.py --write"


def _prose_blocks(markdown: str) -> list[str]:
    """Paragraphs of a markdown cell that are prose: not fenced code, not table rows."""
    markdown = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    blocks = []
    for block in re.split(r"\n\s*\n", markdown):
        lines = [ln for ln in block.splitlines() if not ln.lstrip().startswith("|")]
        text = re.sub(r"`[^`]*`", "", "\n".join(lines))          # inline code
        text = re.sub(r"\]\([^)]*\)|https?://\S+", "", text)     # link targets, addresses
        if text.strip():
            blocks.append(text)
    return blocks


@pytest.mark.parametrize("ja", JA, ids=lambda p: p.name)
def test_the_prose_is_japanese(ja):
    left = []
    for cell in _load(ja)["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        for block in _prose_blocks("".join(cell["source"])):
            if not JAPANESE.search(block) and ENGLISH_WORDS.search(block):
                left.append(f"cell {cell['id']}: {block.strip()[:80]!r}")
    assert not left, "English prose left untranslated in notebooks/ja/" + ja.name + ":\n" + "\n".join(left)


def test_the_prose_check_catches_english():
    assert _prose_blocks("## Summary\n\nThe lab plays the memo's world.\n")
    assert all(not JAPANESE.search(b) and ENGLISH_WORDS.search(b)
               for b in _prose_blocks("The lab plays the memo's world on loopback."))
    assert not _prose_blocks("```\n/etc/postfix/main.cf\nrelayhost = [mail.isp.example.net]:587\n```\n")
    assert not _prose_blocks("| a | b |\n|---|---|\n| `x` | `y` |\n")


@pytest.mark.parametrize("ja", JA, ids=lambda p: p.name)
def test_japanese_notebook_is_committed_without_outputs(ja):
    dirty = [c["id"] for c in _load(ja)["cells"] if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"notebooks/ja/{ja.name}: cells {dirty} carry outputs; strip them"


def test_sync_refuses_cells_it_cannot_match():
    sync = _sync()
    en = {"cells": [{"cell_type": "code", "id": "a", "metadata": {}, "source": "x = 1"},
                    {"cell_type": "code", "id": "b", "metadata": {}, "source": "y = 2"}], "metadata": {}}
    swapped = {"cells": list(reversed(en["cells"])), "metadata": {}}
    with pytest.raises(sync.SyncError, match="another order"):
        sync.synced(en, swapped, "NN.ipynb")
    with pytest.raises(sync.SyncError, match=r"\['b'\] are in notebooks/NN.ipynb but not"):
        sync.synced(en, {"cells": en["cells"][:1], "metadata": {}}, "NN.ipynb")
    ja = {"cells": [{"cell_type": "markdown", "id": "m", "metadata": {}, "source": "日本語"},
                    {"cell_type": "code", "id": "a", "metadata": {}, "source": "x = 0", "outputs": [1],
                     "execution_count": 3},
                    {"cell_type": "code", "id": "b", "metadata": {}, "source": "y = 2"}], "metadata": {}}
    assert len(sync.differences(en, ja, "NN.ipynb")) == 2
    fixed = sync.synced(en, ja, "NN.ipynb")
    assert [c["source"] for c in fixed["cells"]] == ["日本語", "x = 1", "y = 2"]
    assert not sync.differences(en, fixed, "NN.ipynb")


# -- README.ja.md and the glossaries -------------------------------------------------------

def _first_sh_block_after(text: str, heading: str) -> list[str]:
    after = text[text.index(heading):]
    block = re.search(r"```sh\n(.*?)```", after, re.S)
    assert block, f"no ```sh block after {heading!r}"
    return [ln.split("#", 1)[0].rstrip() for ln in block.group(1).splitlines() if ln.strip()]


def test_readme_ja_has_the_same_two_commands():
    en = (ROOT / "README.md").read_text(encoding="utf-8")
    ja = (ROOT / "README.ja.md").read_text(encoding="utf-8")
    commands = _first_sh_block_after(en, "## Two commands")
    assert commands == ["make lab", "make test"]
    assert _first_sh_block_after(ja, "## 2 つのコマンド") == commands
    # every other command block of the README is there too, command for command
    en_blocks = [[ln.split("#", 1)[0].rstrip() for ln in b.splitlines() if ln.strip()]
                 for b in re.findall(r"```(?:sh|python)\n(.*?)```", en, re.S)]
    ja_blocks = [[ln.split("#", 1)[0].rstrip() for ln in b.splitlines() if ln.strip()]
                 for b in re.findall(r"```(?:sh|python)\n(.*?)```", ja, re.S)]
    assert ja_blocks == en_blocks


def test_each_readme_links_the_other_from_its_top():
    en = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    ja = (ROOT / "README.ja.md").read_text(encoding="utf-8").splitlines()
    assert any("(README.ja.md)" in ln for ln in en[:5]), "README.md links README.ja.md near its top"
    assert any("(README.md)" in ln for ln in ja[:5])
    assert JAPANESE.search("\n".join(ja))


def _glossary_rows(path: Path) -> list[list[str]]:
    return [[c.strip() for c in ln.strip().strip("|").split("|")]
            for ln in path.read_text(encoding="utf-8").splitlines()
            if ln.startswith("|") and not ln.startswith("|---")][1:]


def test_the_glossaries_agree():
    en, ja = ROOT / "notebooks" / "GLOSSARY.md", JA_DIR / "GLOSSARY.md"
    en_rows, ja_rows = _glossary_rows(en), _glossary_rows(ja)
    assert en_rows and len(en_rows) == len(ja_rows)
    # the same pairs of terms: English, Japanese in the English edition; Japanese, English in the other
    assert [(r[0], r[1]) for r in en_rows] == [(r[1], r[0]) for r in ja_rows]
    assert all(JAPANESE.search(r[2]) for r in ja_rows), "the Japanese glossary explains in Japanese"
    for readme, link in (("README.md", "notebooks/GLOSSARY.md"), ("README.ja.md", "notebooks/ja/GLOSSARY.md")):
        assert f"({link})" in (ROOT / readme).read_text(encoding="utf-8")
