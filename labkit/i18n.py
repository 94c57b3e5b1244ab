"""The language of what labkit shows the reader: English, or Japanese for the Japanese edition.

    from labkit.i18n import _, N_

labkit works in English: its results, events, logs, SMTP replies and exceptions are English,
whatever the language. What a chapter *shows* the reader (an exercise checker's verdict when
printed, a table's headings, the provider's reasons in a journey) passes through ``_()`` on
its way out, and reads in the chosen language. A sentence made from a template
(``N_("right: port {port} plays 587").format(port=...)``) is found again by its template, so
it is translated even after the values were put in. A message the catalogue lacks stays
English.

The language, first that applies:

1. ``labkit.set_language("ja")`` (``set_language(None)`` forgets the choice);
2. the environment variable ``LABKIT_LANG`` (``ja``, ``ja_JP.UTF-8``, ``en``);
3. the folder the kernel runs in: a folder named ``ja`` holding the chapters
   (``notebooks/ja/``, or ``ja/`` wherever the notebooks were copied) means Japanese. Jupyter
   and nbval start a notebook's kernel in the notebook's folder, so the Japanese edition speaks
   Japanese with code cells identical to the English edition's;
4. English.

The catalogues are gettext's: ``labkit/locale/LANG/LC_MESSAGES/labkit.po`` and its compiled
``labkit.mo``. ``make i18n`` extracts the messages (``pybabel extract -k N_``), merges them
into each ``.po`` and compiles the ``.mo``.
"""
from __future__ import annotations

import gettext
import os
import re
from functools import lru_cache
from pathlib import Path

__all__ = ["_", "N_", "set_language", "get_language", "languages", "LOCALE_DIR", "DOMAIN"]

DOMAIN = "labkit"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DEFAULT = "en"

_chosen: str | None = None


def _normalize(lang: str) -> str:
    """``ja_JP.UTF-8`` -> ``ja``; ``C`` and ``POSIX`` -> ``en``."""
    code = re.split(r"[_.@-]", lang.strip(), maxsplit=1)[0].lower()
    return DEFAULT if code in ("", "c", "posix") else code


def languages() -> list[str]:
    """The languages labkit can show: English and each one with a compiled catalogue."""
    found = sorted(p.parent.parent.name for p in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.mo"))
    return [DEFAULT, *[lang for lang in found if lang != DEFAULT]]


def set_language(lang: str | None) -> None:
    """Show labkit's messages in ``lang`` (``"ja"``, ``"en"``); ``None`` goes back to the
    default order (``LABKIT_LANG``, then the notebook's folder, then English)."""
    global _chosen
    if lang is None:
        _chosen = None
        return
    code = _normalize(lang)
    if code not in languages():
        raise ValueError(f"labkit has no messages in {lang!r}; it speaks {', '.join(languages())}")
    _chosen = code


def _from_folder() -> str | None:
    try:
        cwd = str(Path.cwd())
    except OSError:  # the folder was removed under us
        return None
    return _edition_of(cwd)


@lru_cache(maxsize=64)
def _edition_of(folder: str) -> str | None:
    """``ja`` for a folder named ``ja`` that holds chapters (``NN_topic.ipynb``): the Japanese
    edition, as ``notebooks/ja/`` in the repository or ``ja/`` among copied notebooks."""
    path = Path(folder)
    if path.name == DEFAULT or path.name not in languages():
        return None
    return path.name if any(path.glob("[0-9][0-9]_*.ipynb")) else None


def get_language() -> str:
    """The language labkit shows its messages in now (see the module's documentation)."""
    if _chosen:
        return _chosen
    env = os.environ.get("LABKIT_LANG", "").strip()
    if env:
        return _normalize(env)
    return _from_folder() or DEFAULT


@lru_cache(maxsize=None)
def _catalogue(lang: str) -> gettext.NullTranslations:
    return gettext.translation(DOMAIN, str(LOCALE_DIR), languages=[lang], fallback=True)


_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(![rsa])?(:[^{}]*)?\}")


def _pattern(msgid: str) -> re.Pattern[str]:
    """A message with ``{fields}`` as a pattern: each field a named group (the same field twice
    must hold the same text), the text around it literal."""
    parts, seen, pos = [], set(), 0
    for m in _FIELD.finditer(msgid):
        parts.append(re.escape(msgid[pos:m.start()].replace("{{", "{").replace("}}", "}")))
        name = m.group(1)
        parts.append(f"(?P=f_{name})" if name in seen else f"(?P<f_{name}>.*?)")
        seen.add(name)
        pos = m.end()
    parts.append(re.escape(msgid[pos:].replace("{{", "{").replace("}}", "}")))
    return re.compile("".join(parts), re.S)


@lru_cache(maxsize=None)
def _templates(lang: str) -> list[tuple[int, re.Pattern[str], str]]:
    """The catalogue's templates (messages with ``{fields}``) as patterns, most specific first."""
    catalogue = getattr(_catalogue(lang), "_catalog", {})
    out = []
    for msgid, msgstr in catalogue.items():
        if not isinstance(msgid, str) or not msgid or not msgstr or not _FIELD.search(msgid):
            continue
        out.append((len(_FIELD.sub("", msgid)), _pattern(msgid), msgstr))
    out.sort(key=lambda t: -t[0])
    return out


@lru_cache(maxsize=None)
def _pieces(lang: str) -> list[tuple[int, re.Pattern[str], str]]:
    """Messages that can begin a longer sentence (``N_("right: ") + ...``): catalogued sentences
    and joining pieces as patterns for a prefix, the longest first. Single words and headings
    are left out, and so are templates ending in a field (it would match nothing as a prefix)."""
    catalogue = getattr(_catalogue(lang), "_catalog", {})
    out = []
    for msgid, msgstr in catalogue.items():
        if not isinstance(msgid, str) or not msgid or not msgstr or msgid.endswith("}"):
            continue
        if len(msgid.split()) < 4 and not msgid.endswith((" ", ":", ";", ".", ",")):
            continue  # a word or a heading ("host", "seen in"), not the start of a sentence
        out.append((len(_FIELD.sub("", msgid)), _pattern(msgid), msgstr))
    out.sort(key=lambda t: -t[0])
    return out


def _fill(msgstr: str, m: re.Match[str], lang: str, depth: int) -> str:
    values = {k[2:]: _translate(v, lang, depth + 1) for k, v in m.groupdict().items()}
    return _FIELD.sub(lambda f: values.get(f.group(1), f.group(0)), msgstr).replace(
        "{{", "{").replace("}}", "}")


def _translate(message: str, lang: str, depth: int) -> str:
    catalogue = _catalogue(lang)
    found = catalogue.gettext(message)
    if found != message or depth > 3:
        return found
    # the template that explains the most of the message (its literal text is the longest):
    # a whole sentence, or the first piece of a sentence joined from pieces
    whole = next(((n, m, msgstr) for n, pattern, msgstr in _templates(lang)
                  for m in [pattern.fullmatch(message)] if m), None)
    for n, pattern, msgstr in _pieces(lang):
        if whole and n <= whole[0]:
            break
        m = pattern.match(message)
        if m and 0 < m.end() < len(message):
            rest = message[m.end():]
            if message[m.end() - 1].isalnum() and rest[0].isalnum():
                continue  # the piece ends inside a word
            return _fill(msgstr, m, lang, depth) + _translate(rest, lang, depth + 1)
    return _fill(whole[2], whole[1], lang, depth) if whole else message


def _(message: str) -> str:
    """``message`` in the current language; English (``message`` itself) if untranslated."""
    lang = get_language()
    if lang == DEFAULT or not isinstance(message, str) or not message:
        return message
    return _translate(message, lang, 0)


def N_(message: str) -> str:
    """Mark ``message`` for the catalogue without translating it (gettext's ``gettext_noop``):
    labkit keeps it in English, and ``_()`` translates it where it is shown."""
    return message
