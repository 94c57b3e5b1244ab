"""The book (make book): its plan from the notebooks present, then the built book in Chromium.

``test_every_page_in_chromium`` builds the book (book/build.py: every chapter executed, several at
a time), serves it on 127.0.0.1 and opens every page in headless Chromium (Debian's package,
driven by Playwright). Every request a page makes is recorded, and none may leave 127.0.0.1;
every Mermaid diagram must be drawn as SVG; no page may show an error or a warning (Sphinx's
system messages, a stderr output or a traceback outside a cell tagged ``raises-exception``, a
Mermaid syntax error, a console error). A screenshot of each page is saved under
``test-artifacts/book/`` (JPEG, the whole page). Chromium missing: skip with one line, or fail under
LABKIT_REQUIRE_REAL=1 (CI).
"""
from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import REQUIRE_REAL, book_build_result

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "book"


def _load_build():
    spec = importlib.util.spec_from_file_location("book_build", ROOT / "book" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("book_build", mod)
    spec.loader.exec_module(mod)
    return mod


build = _load_build()


# -- the plan: no execution, no Sphinx ---------------------------------------------------------

def _notebook(path: Path, title: str, requires=()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    if requires:
        meta["labkit"] = {"requires": list(requires)}
    path.write_text(json.dumps({"cells": [{"cell_type": "markdown", "id": "a", "metadata": {},
                                           "source": [f"# {title}\n", "\n", "Text."]}],
                                "metadata": meta, "nbformat": 4, "nbformat_minor": 5}))


def test_the_contents_are_the_notebooks_present():
    editions = build.find_editions()
    names = [c.path.name for c in editions[0].chapters]
    assert names == sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    toc = build.toc(editions[0])
    for name in names:
        assert f"- file: chapters/{Path(name).stem}\n" in toc
    assert "- file: glossary" in toc and "- file: memo" in toc and "- file: checkers" in toc


def test_a_new_chapter_and_a_second_edition_appear_by_themselves(tmp_path):
    _notebook(tmp_path / "notebooks" / "00_welcome.ipynb", "00 · Welcome")
    _notebook(tmp_path / "notebooks" / "14_new_topic.ipynb", "14 · New", requires=["postfix"])
    (tmp_path / "notebooks" / "notes.ipynb").write_text("{}")          # not a chapter
    _notebook(tmp_path / "notebooks" / "ja" / "00_welcome.ipynb", "00 · ようこそ")
    editions = build.find_editions(tmp_path)
    assert [(e.code, e.subpath) for e in editions] == [("en", ""), ("ja", "ja")]
    assert [c.number for c in editions[0].chapters] == ["00", "14"]
    assert editions[0].chapters[1].requires == ["postfix"]
    assert "chapters/14_new_topic" in build.toc(editions[0])
    switch = build.edition_switch(editions, editions[0])
    assert "<strong>English</strong>" in switch and 'data-to="ja"' in switch and "日本語" in switch
    assert build.edition_switch(editions[:1], editions[0]) == ""        # one edition: no switch


def test_each_chapter_names_its_memo_section_and_the_memo_page_links_back():
    chapters = build.find_editions()[0].chapters
    memo = (ROOT / "book" / "memo.md").read_text(encoding="utf-8")
    for c in chapters:
        assert c.memo, f"{c.path.name}: no memo section (MEMO_SECTIONS or metadata labkit.memo)"
        for anchor in c.memo:
            assert f"(memo-{anchor})=" in memo, f"{c.path.name}: memo.md has no section {anchor}"
    text = build.memo_chapters(memo, chapters)
    assert "@chapters" not in text
    assert "{doc}`chapters/00_welcome`" in text.split("(memo-l804f90a)=")[1].split("(memo-")[0]


def test_each_page_says_which_mode_made_it_and_links_notebook_memo_and_checkers(tmp_path):
    import nbformat

    chapter = build.find_editions()[0].chapters[7]           # 07: needs real Postfix
    nb = nbformat.read(chapter.path, as_version=4)
    for mode, words in (("real", "**real mode**"), ("embedded", "**embedded mode**"),
                        ("not executed", "**Not executed**")):
        run = build.Run(chapter, mode, 12.0, False, nb, note="this build does not run as root")
        page = build.page_notebook(run, "2026-01-01 00:00 UTC", "Postfix 3.7.11")
        assert page.cells[0].source.startswith("# 07"), "the title stays first"
        note = page.cells[1].source
        assert words in note
        assert f"{{download}}`{chapter.path.name} <../_notebooks/{chapter.path.name}>`" in note
        assert "<memo-qf7cece0>" in note and "<checkers-07>" in note
        solutions = [c for c in page.cells if "solution" in c.metadata.get("tags", [])]
        assert solutions and all("hide-cell" in c.metadata["tags"] for c in solutions)
    assert nb.cells[0].source.startswith("# 07") and "hide-cell" not in json.dumps(nb), "the source is not changed"


def test_the_glossary_has_the_memo_terms():
    text = (ROOT / "book" / "glossary.md").read_text(encoding="utf-8")
    body = text.split("```{glossary}")[1]
    terms = {line.strip() for line in body.splitlines() if line and not line.startswith((" ", "`"))}
    for term in ("MUA", "MSA", "MTA", "MDA", "OP25B", "SPF", "DKIM", "DMARC", "SMTP", "STARTTLS",
                 "SASL", "MX", "FQDN", "Smarthost", "Open relay"):
        assert term in terms, f"glossary lacks {term}"
    for japanese in ("踏み台", "認証局", "証明書発行要求", "スマートホスト", "MXレコード"):
        assert japanese in body


# -- the built book in Chromium ----------------------------------------------------------------

def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    msg = "Chromium is not installed (run: sudo scripts/install-browser-packages.sh)"
    if REQUIRE_REAL:
        pytest.fail(msg + " and LABKIT_REQUIRE_REAL=1 forbids skipping", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def book():
    """Build the book (a cache in book/_build/cache makes a second run quick); its html folder."""
    if not build.MERMAID_JS.exists():
        msg = "node_modules/mermaid is missing (run: make node-packages)"
        if REQUIRE_REAL:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    t = time.monotonic()
    done = book_build_result(timeout=1200)      # started in the background by conftest.py
    if done is None:
        p = subprocess.run([sys.executable, str(ROOT / "book" / "build.py")], cwd=ROOT,
                           capture_output=True, text=True, timeout=1200)
        done = (p.returncode, p.stdout + p.stderr)
    rc, output = done
    assert rc == 0, f"make book failed:\n{output[-6000:]}"
    last = [line for line in output.splitlines() if line.startswith("book: ") and "built in" in line]
    print(last[-1] if last else "book built", f"({time.monotonic() - t:.0f} s waited in this test)")
    return build.HTML


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(book):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_Quiet, directory=str(book)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


#: What a page must not show: Sphinx's and docutils' messages, outputs on stderr and tracebacks
#: (a cell tagged raises-exception fails on purpose and may), Mermaid's syntax-error picture.
_PAGE_PROBLEMS = """() => {
  const out = [];
  const text = el => (el.innerText || el.textContent || '').trim().slice(0, 200);
  document.querySelectorAll('.system-message, .problematic').forEach(el => out.push('sphinx: ' + text(el)));
  document.querySelectorAll('.output.stderr, .output.traceback, .output.error').forEach(el => {
    if (!el.closest('.tag_raises-exception')) out.push('output: ' + text(el));
  });
  document.querySelectorAll('pre.mermaid').forEach((el, i) => {
    const svg = el.querySelector('svg');
    if (!svg) out.push('diagram ' + i + ' not drawn: ' + text(el).slice(0, 80));
    else if (svg.getAttribute('aria-roledescription') === 'error' || /Syntax error/.test(svg.textContent))
      out.push('diagram ' + i + ' is Mermaid\\'s error picture');
  });
  return {problems: out, diagrams: document.querySelectorAll('pre.mermaid svg').length,
          state: document.documentElement.dataset.mermaid || ''};
}"""

_LAUNCH_ARGS = ["--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--disable-extensions"]


#: URLs that leave the machine: any scheme but file/data/blob/about, to any host but 127.0.0.1.
_OFFSITE = re.compile(r"^(?!(file|data|blob|about):)(?![a-z]+://127\.0\.0\.1([:/]|$))")


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("file", "data", "blob", "about"):
        return True
    return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname == "127.0.0.1"


def test_every_page_in_chromium(served, book):
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    chapters = [c.path.stem for c in build.find_editions()[0].chapters]
    pages = ["index"] + [f"chapters/{c}" for c in chapters] + ["glossary", "memo", "checkers"]
    for page_name in pages:
        assert (book / f"{page_name}.html").exists(), f"the book has no {page_name}.html"
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    args = list(_LAUNCH_ARGS) + (["--no-sandbox"] if os.geteuid() == 0 else [])
    requests: list[str] = []
    offsite: list[str] = []
    failures: dict[str, list[str]] = {}
    drawn = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=args, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")

            def seen(request):
                requests.append(request.url)
                if not _is_local(request.url):
                    offsite.append(request.url)
            context.on("request", seen)
            # A request for anywhere but 127.0.0.1 is also stopped before it is sent (the pattern
            # is matched in Playwright's driver, so local requests are not slowed).
            context.route(_OFFSITE, lambda route: route.abort())
            # The recorder sees what a CDN would be asked for (and stops it): a page that loads one.
            probe = context.new_page()
            probe.set_content('<script src="https://cdn.jsdelivr.net/npm/mermaid"></script>')
            probe.close()
            assert offsite == ["https://cdn.jsdelivr.net/npm/mermaid"], offsite
            offsite.clear()
            requests.clear()
            for page_name in pages:
                page = context.new_page()
                errors: list[str] = []
                page.on("console", lambda m, e=errors: e.append(f"console {m.type}: {m.text}")
                        if m.type in ("error", "warning") else None)
                page.on("pageerror", lambda exc, e=errors: e.append(f"script error: {exc}"))
                page.on("requestfailed", lambda req, e=errors: e.append(f"request failed: {req.url}"))
                page.goto(f"{served}/{page_name}.html", wait_until="load")
                has_diagrams = page.locator("pre.mermaid").count() > 0
                if has_diagrams:
                    page.wait_for_function("document.documentElement.dataset.mermaid", timeout=30000)
                found = page.evaluate(_PAGE_PROBLEMS)
                if has_diagrams and found["state"] != "drawn":
                    errors.append(f"mermaid: {found['state']}")
                problems = errors + found["problems"]
                if problems:
                    failures[page_name] = problems
                drawn[page_name] = found["diagrams"]
                # JPEG: a whole chapter is 10,000 pixels tall, and PNG takes twice as long to encode
                page.screenshot(path=str(ARTIFACTS / (page_name.replace("/", "__") + ".jpg")), full_page=True,
                                type="jpeg", quality=70)
                page.close()
        finally:
            browser.close()
    assert not offsite, f"requests that left the machine: {sorted(set(offsite))}"
    assert requests, "no request was recorded"
    assert not failures, "pages with errors or warnings:\n" + "\n".join(
        f"  {p}: {'; '.join(v)}" for p, v in failures.items())
    # The chapters that draw diagrams show them: 00 draws the path of its message.
    assert drawn.get("chapters/00_welcome", 0) >= 1, drawn
    assert sum(drawn.values()) >= 5, drawn
    (ARTIFACTS / "requests.txt").write_text("\n".join(requests) + "\n")
    print(f"{len(pages)} pages, {sum(drawn.values())} diagrams drawn, {len(requests)} requests, all to "
          f"127.0.0.1; screenshots in {ARTIFACTS.relative_to(ROOT)}")
