"""labkit's language setting (labkit/i18n.py) and its gettext catalogues (labkit/locale/)."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import Result, i18n
from labkit.i18n import N_, _

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "labkit" / "locale"
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(![rsa])?(:[^{}]*)?\}")


@pytest.fixture(autouse=True)
def _default_language(monkeypatch, tmp_path):
    """Each test starts from the default: no choice made, no LABKIT_LANG, a neutral folder."""
    monkeypatch.delenv("LABKIT_LANG", raising=False)
    monkeypatch.chdir(tmp_path)
    i18n.set_language(None)
    yield
    i18n.set_language(None)


def _catalogue(lang: str = "ja"):
    from babel.messages.pofile import read_po

    with open(LOCALE / lang / "LC_MESSAGES" / "labkit.po", "rb") as f:
        return read_po(f, locale=lang)


# -- the setting ----------------------------------------------------------------------------

def test_english_is_the_default():
    assert i18n.get_language() == "en"
    assert str(Result(True, "right: port 1 plays the ISP's submission port 587")) == \
        "ok: right: port 1 plays the ISP's submission port 587"


def test_set_language_then_back(monkeypatch):
    import labkit

    labkit.set_language("ja")
    assert labkit.get_language() == "ja" and _("reason") == "理由"
    labkit.set_language("en")
    assert _("reason") == "reason"
    labkit.set_language(None)
    assert labkit.get_language() == "en"
    with pytest.raises(ValueError, match="no messages in 'xx'"):
        labkit.set_language("xx")


def test_environment_variable(monkeypatch):
    monkeypatch.setenv("LABKIT_LANG", "ja_JP.UTF-8")
    assert i18n.get_language() == "ja"
    i18n.set_language("en")  # an explicit choice wins over the environment
    assert i18n.get_language() == "en"
    i18n.set_language(None)
    monkeypatch.setenv("LABKIT_LANG", "C")
    assert i18n.get_language() == "en"


def test_the_japanese_notebooks_folder_means_japanese(monkeypatch, tmp_path):
    ja = tmp_path / "notebooks" / "ja"
    ja.mkdir(parents=True)
    (ja / "00_welcome.ipynb").write_text("{}")
    monkeypatch.chdir(ja)
    assert i18n.get_language() == "ja"
    monkeypatch.chdir(ja.parent)
    assert i18n.get_language() == "en"
    copied = tmp_path / "work" / "ja"  # the docker image copies notebooks/ to work/
    copied.mkdir(parents=True)
    (copied / "07_postfix_smarthost.ipynb").write_text("{}")
    monkeypatch.chdir(copied)
    assert i18n.get_language() == "ja"
    other = tmp_path / "ja"  # a folder named ja without chapters is not the Japanese edition
    other.mkdir()
    monkeypatch.chdir(other)
    assert i18n.get_language() == "en"
    monkeypatch.chdir(ja)
    monkeypatch.setenv("LABKIT_LANG", "en")  # the environment wins over the folder
    assert i18n.get_language() == "en"


def test_untranslated_messages_stay_english():
    i18n.set_language("ja")
    assert _("a sentence no catalogue has") == "a sentence no catalogue has"
    assert str(Result(False, "a sentence no catalogue has")) == "NG: a sentence no catalogue has"


def test_a_sentence_made_from_a_template_is_translated():
    i18n.set_language("ja")
    english = N_("right: port {want} plays the ISP's submission port 587").format(want=2587)
    assert english == "right: port 2587 plays the ISP's submission port 587"
    assert _(english) == "正解: ポート 2587 が ISP のサブミッションポート 587 を演じています"
    # values that are themselves catalogued sentences are translated too
    inner = N_("Every check the provider makes passed, so the message goes to the Inbox.")
    assert _(N_("right: {reason}").format(reason=inner)) == \
        "正解: プロバイダのチェックがすべて pass したので、メッセージは受信トレイに入ります。"


def test_results_keep_their_english_reason():
    """Only what is shown is translated: Result.reason, events and SMTP replies stay English."""
    i18n.set_language("ja")
    r = Result(True, "right: port 2587 plays the ISP's submission port 587")
    assert r.reason.startswith("right:") and str(r).startswith("OK: 正解:")


# -- the catalogues -------------------------------------------------------------------------

def test_there_is_a_japanese_catalogue():
    assert i18n.languages() == ["en", "ja"]


def test_the_mo_is_compiled_from_the_po():
    from babel.messages.mofile import write_mo

    for po in sorted(LOCALE.glob("*/LC_MESSAGES/labkit.po")):
        lang = po.parent.parent.name
        buf = io.BytesIO()
        write_mo(buf, _catalogue(lang), use_fuzzy=False)
        mo = po.with_suffix(".mo")
        assert mo.exists() and mo.read_bytes() == buf.getvalue(), \
            f"{mo.relative_to(ROOT)} is older than its .po: run make i18n"


def test_the_catalogue_has_every_marked_message():
    """A message marked _() or N_() in labkit is in the .po (run make i18n after adding one)."""
    from babel.messages.extract import extract_from_dir

    marked = {m[2] for m in extract_from_dir(str(ROOT / "labkit"), keywords={"_": None, "N_": None})
              if isinstance(m[2], str)}
    catalogued = {m.id for m in _catalogue() if m.id}
    missing = sorted(marked - catalogued)
    assert not missing, f"{len(missing)} marked message(s) not in the catalogue, e.g. {missing[:3]}: run make i18n"


def test_translations_keep_the_fields_of_their_message():
    bad = []
    for m in _catalogue():
        if m.id and m.string:
            fields = {f.group(1) for f in FIELD.finditer(m.id)}
            used = {f.group(1) for f in FIELD.finditer(m.string)}
            if not used <= fields:
                bad.append(m.id)
    assert not bad, f"translations with fields the message does not have: {bad[:3]}"


# -- a chapter, as each edition runs it -----------------------------------------------------

def _run_chapter(folder: Path, name: str) -> str:
    """Run a chapter's code cells in a fresh Python started in ``folder`` (as Jupyter and nbval
    start a notebook's kernel in the notebook's folder); its standard output."""
    cells = [c for c in json.loads((folder / name).read_text(encoding="utf-8"))["cells"]
             if c["cell_type"] == "code"]
    program = "\n".join("".join(c["source"]) for c in cells)
    env = {k: v for k, v in os.environ.items() if k != "LABKIT_LANG"}
    done = subprocess.run([sys.executable, "-c", program], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_chapter_prints_japanese_in_the_japanese_edition():
    ja = _run_chapter(ROOT / "notebooks" / "ja", "00_welcome.ipynb")
    assert "OK: 正解: ポート" in ja and "受信トレイ" not in ja.split("OK:")[0]
    en = _run_chapter(ROOT / "notebooks", "00_welcome.ipynb")
    assert "ok: right: port" in en and not JAPANESE.search(en)


def test_a_sentence_joined_from_pieces_is_translated():
    i18n.set_language("ja")
    joined = (N_("right: smtp_tls_security_level = {value} sends nothing (no AUTH either) without TLS")
              .format(value="secure") + N_(" and checks the certificate too"))
    assert _(joined) == "正解: smtp_tls_security_level = secure なら、TLS なしでは何も送りません（AUTH もしません）。証明書も確認します"
    assert _("host mail.example.com") == "host mail.example.com"  # a heading does not begin a sentence
    assert _("seen in") == "記録した場所"
