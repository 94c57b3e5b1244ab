#!/usr/bin/env python3
"""Build the Mail Lab book (``make book``): every chapter executed, rendered with Jupyter Book.

Steps, for each edition (``notebooks/`` in English; ``notebooks/ja/`` in Japanese when it
exists; see EDITIONS):

1. find the chapters: every ``NN_topic.ipynb`` in the edition's folder, in order (the table of
   contents is made from what is there, so a new chapter appears by itself);
2. execute them, several at a time (``BOOK_JOBS``, default: the number of CPUs), each in its own
   kernel from the notebook's folder: chapters whose metadata says ``labkit.requires`` (real
   Postfix, OpenDKIM, Dovecot) in real mode where this machine can run it, the others in
   embedded mode. Where real mode cannot run, such a chapter is shown without outputs and its
   page says why; under ``LABKIT_REQUIRE_REAL=1`` (CI) that is a failure instead. An executed
   chapter is kept in ``book/_build/cache/`` under a hash of its source, labkit's source and its
   mode, so a second build re-runs only what changed;
3. stage a Jupyter Book source folder in ``book/_build/src/EDITION``: the pages of ``book/``
   (intro, glossary, the memo's sections), the generated checkers page, the executed chapters,
   each with a note under its title saying which mode made it and linking its notebook, the
   memo's section and its exercise checkers, and ``_static/mermaid.min.js`` from
   ``node_modules`` (``make node-packages``);
4. ``jupyter-book build`` it, warnings as errors, into ``book/_build/html`` (the Japanese edition
   into ``book/_build/html/ja``), and write ``book/_build/report.json`` (seconds per chapter,
   modes, the build's own time).

Usage: python book/build.py [--jobs N] [--no-cache] [--only 00,01]   (from the repository root)
"""
from __future__ import annotations

import argparse
import concurrent.futures
import copy
import datetime as _dt
import hashlib
import html
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
BUILD = BOOK / "_build"
HTML = BUILD / "html"
CACHE = BUILD / "cache"
MERMAID_JS = ROOT / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"

#: (code, folder of its notebooks, name in the language switch, path of its html under HTML).
#: The first edition is the book's root; a folder that holds no chapter is no edition.
EDITIONS = [
    ("en", "notebooks", "English", ""),
    ("ja", "notebooks/ja", "日本語", "ja"),
]

#: The memo's sections (anchors of memo.md) each chapter follows. A chapter can name its own in
#: its notebook metadata, ``"labkit": {"memo": ["ke15dfc5"]}``; that wins over this table.
MEMO_SECTIONS = {
    "00": ["l804f90a"], "01": ["ke15dfc5"], "02": ["ke15dfc5"], "03": ["ke15dfc5"],
    "04": ["ke15dfc5"], "05": ["ke15dfc5"], "06": ["ke15dfc5"], "07": ["qf7cece0"],
    "08": ["qf7cece0"], "09": ["qf7cece0"], "10": ["w41ad684", "n63b4630"],
    "11": ["w41ad684", "n63b4630"], "12": ["w41ad684", "n63b4630"],
    "13": ["n63b4630", "vb077198"], "14": ["qf7cece0", "n63b4630"],
}
MEMO_TITLES = {
    "l804f90a": "はじめに", "ke15dfc5": "基本的な用語", "qf7cece0": "POSTFIX によるメールサーバの構築",
    "w41ad684": "迷惑メールにならないために → はじめに", "n63b4630": "MyDNSでの実現",
    "vb077198": "Google に迷惑メールに入れないように通知する", "q9801a09": "Google Postmaster Tool",
}
#: What real mode needs, by the name a chapter's ``labkit.requires`` uses (as in conftest.py).
REAL_TOOLS = {"postfix": ("postfix", "postconf", "postmap"), "opendkim": ("opendkim",),
              "dovecot": ("dovecot",)}
CHAPTER_RE = re.compile(r"^(\d\d)_[A-Za-z0-9_]+\.ipynb$")


class BookError(Exception):
    """The book could not be built; the message says which chapter or step, and why."""


@dataclass
class Chapter:
    number: str            #: "00"
    path: Path             #: the notebook as stored (no outputs)
    requires: list[str]    #: real daemons its metadata asks for
    memo: list[str]        #: anchors of memo.md

    @property
    def name(self) -> str:
        return self.path.stem


@dataclass
class Edition:
    code: str
    folder: Path
    label: str
    subpath: str
    chapters: list[Chapter] = field(default_factory=list)


# -- planning (no I/O beyond reading the notebooks) --------------------------------------------

def find_editions(root: Path = ROOT) -> list[Edition]:
    """Every edition whose folder holds at least one chapter, the first one being the root."""
    out = []
    for code, folder, label, subpath in EDITIONS:
        ed = Edition(code, root / folder, label, subpath, find_chapters(root / folder))
        if ed.chapters:
            out.append(ed)
    return out


def find_chapters(folder: Path) -> list[Chapter]:
    chapters = []
    for p in sorted(folder.glob("*.ipynb")) if folder.is_dir() else []:
        m = CHAPTER_RE.match(p.name)
        if not m:
            continue
        meta = json.loads(p.read_text(encoding="utf-8")).get("metadata", {}).get("labkit", {})
        memo = list(meta.get("memo") or MEMO_SECTIONS.get(m.group(1), []))
        chapters.append(Chapter(m.group(1), p, list(meta.get("requires", [])), memo))
    return chapters


def toc(edition: Edition) -> str:
    """The _toc.yml of an edition: the intro, the chapters found, then the reference pages."""
    lines = ["# Made by book/build.py from the notebooks present; do not edit.",
             "format: jb-book", "root: intro", "parts:", "  - caption: Chapters", "    chapters:"]
    lines += [f"      - file: chapters/{c.name}" for c in edition.chapters]
    lines += ["  - caption: Reference", "    chapters:", "      - file: glossary",
              "      - file: memo", "      - file: checkers"]
    return "\n".join(lines) + "\n"


def real_mode_problem() -> str | None:
    """Why real mode cannot run here, or None when it can (root, and the daemons installed)."""
    for tools in REAL_TOOLS.values():
        for tool in tools:
            if not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}")):
                return f"{tool} is not installed (sudo scripts/install-system-packages.sh)"
    if os.geteuid() != 0:
        return "real daemons run from the sandbox as root, and this build does not run as root"
    return None


def daemon_versions() -> str:
    """'Postfix 3.7.11, OpenDKIM 2.11.0~beta2, Dovecot 2.3.19.1' as far as they answer."""
    found = []
    for name, cmd, pick in (("Postfix", ["postconf", "-d", "mail_version"], lambda s: s.split("=")[-1]),
                            ("OpenDKIM", ["opendkim", "-V"], lambda s: s.split()[-1]),
                            ("Dovecot", ["dovecot", "--version"], lambda s: s.split()[0])):
        exe = shutil.which(cmd[0]) or f"/usr/sbin/{cmd[0]}"
        try:
            out = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=10)
            first = (out.stdout or out.stderr).strip().splitlines()[0]
            found.append(f"{name} {pick(first).strip()}")
        except (OSError, IndexError, subprocess.SubprocessError):
            pass
    return ", ".join(found)


# -- execution ---------------------------------------------------------------------------------

def _source_hash(chapter: Chapter, mode: str) -> str:
    h = hashlib.sha256()
    h.update(chapter.path.read_bytes())
    h.update(mode.encode())
    for p in sorted((ROOT / "labkit").rglob("*.py")):
        h.update(str(p.relative_to(ROOT)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:20]


def _execute(path: str, timeout: int) -> tuple[dict, float, str | None]:
    """Execute one notebook in a fresh kernel (a worker process). Returns (notebook, seconds,
    error or None); cells tagged ``raises-exception`` may fail, any other failure is an error."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(Path(path).parent)}})
    t = time.monotonic()
    error = None
    try:
        client.execute()
    except CellExecutionError as e:
        error = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
        error = f"a cell failed: {error}"
    except Exception as e:  # a kernel that died, a timeout: said, never swallowed
        error = f"{type(e).__name__}: {e}"
    return nbformat.from_dict(nb), time.monotonic() - t, error


@dataclass
class Run:
    chapter: Chapter
    mode: str                  #: "real", "embedded" or "not executed"
    seconds: float
    cached: bool
    notebook: dict
    note: str = ""             #: why not executed


def execute_all(chapters: list[Chapter], jobs: int, use_cache: bool, timeout: int = 600) -> list[Run]:
    import nbformat

    problem = real_mode_problem()
    require_real = os.environ.get("LABKIT_REQUIRE_REAL") == "1"
    runs: dict[str, Run] = {}
    todo: list[tuple[Chapter, str, Path]] = []
    for c in chapters:
        mode = "real" if c.requires else "embedded"
        if c.requires and problem:
            if require_real:
                raise BookError(f"{c.path.name} needs real mode, which cannot run here: {problem} "
                                "(LABKIT_REQUIRE_REAL=1 forbids building it without)")
            runs[str(c.path)] = Run(c, "not executed", 0.0, False, nbformat.read(c.path, as_version=4), problem)
            continue
        cached = CACHE / f"{c.name}-{_source_hash(c, mode)}.ipynb"
        if use_cache and cached.exists():
            nb = nbformat.read(cached, as_version=4)
            runs[str(c.path)] = Run(c, mode, float(nb.metadata.get("labbook", {}).get("seconds", 0)), True, nb)
        else:
            todo.append((c, mode, cached))
    # Real chapters first: they take longest, so the pool ends sooner.
    todo.sort(key=lambda t: t[1] != "real")
    if todo:
        print(f"book: executing {len(todo)} chapter(s), {jobs} at a time", flush=True)
    errors = []
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(_execute, str(c.path), timeout): (c, mode, cached) for c, mode, cached in todo}
        for fut in concurrent.futures.as_completed(futures):
            c, mode, cached = futures[fut]
            nb, seconds, error = fut.result()
            print(f"book: {c.path.name}: {mode} mode, {seconds:.1f} s{'  FAILED: ' + error if error else ''}",
                  flush=True)
            if error:
                errors.append(f"{c.path.name}: {error}")
                continue
            nb.metadata["labbook"] = {"seconds": round(seconds, 1), "mode": mode}
            CACHE.mkdir(parents=True, exist_ok=True)
            for old in CACHE.glob(f"{c.name}-*.ipynb"):
                old.unlink()
            nbformat.write(nb, cached)
            runs[str(c.path)] = Run(c, mode, seconds, False, nb)
    if errors:
        raise BookError("chapters failed to execute:\n  " + "\n  ".join(errors))
    return [runs[str(c.path)] for c in chapters]


# -- staging -----------------------------------------------------------------------------------

DAEMON_NAMES = {"postfix": "Postfix", "opendkim": "OpenDKIM", "dovecot": "Dovecot"}


def _and(words: list[str]) -> str:
    return " and ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + " and " + words[-1]


def about_note(run: Run, built: str, versions: str) -> str:
    """The note under a chapter's title: which mode made the page, and its three links."""
    c = run.chapter
    if run.mode == "real":
        names = [DAEMON_NAMES.get(r, r) for r in c.requires]
        these = [v for v in versions.split(", ") if v.split(" ")[0] in names] if versions else []
        made = (f"Executed in **real mode** by `make book` on {built}: real {_and(names)} "
                f"({', '.join(these) or 'versions unknown'}) ran from the lab's sandbox, with the "
                f"lab's own DNS, ISP and mailbox provider around them, in {run.seconds:.0f} s.")
    elif run.mode == "embedded":
        made = (f"Executed in **embedded mode** by `make book` on {built}: the lab's own Python "
                f"servers on loopback addresses, in {run.seconds:.0f} s.")
    else:
        made = (f"**Not executed** in this build, so shown without outputs: this chapter runs real "
                f"{_and([DAEMON_NAMES.get(r, r) for r in c.requires])}, and {run.note}.")
    memo = ", ".join(f"{{ref}}`{MEMO_TITLES.get(a, a)} <memo-{a}>`" for a in c.memo) or "—"
    checker = f"labkit/teach/exercises/ch{c.number}.py"
    checks = (f"{{ref}}`{checker} <checkers-{c.number}>`" if (ROOT / checker).exists() else "none yet")
    return "\n".join([
        ":::{admonition} How this page was made",
        ":class: note labbook-about",
        made,
        "",
        f"- The notebook: {{download}}`{c.path.name} <../_notebooks/{c.path.name}>` "
        f"(`{c.path.relative_to(ROOT)}` in the repository, without outputs: run it yourself with `make lab`)",
        f"- The memo's section: {memo}",
        f"- Its exercises are checked by {checks}",
        ":::",
    ])


def page_notebook(run: Run, built: str, versions: str) -> dict:
    """The executed notebook as the book shows it: the note under the title; solutions folded."""
    import nbformat

    nb = copy.deepcopy(run.notebook)
    cells = nb.cells
    first = cells[0]
    if first.cell_type == "markdown" and first.source.lstrip().startswith("# "):
        title, _, rest = first.source.lstrip().partition("\n")
        cells[0] = nbformat.v4.new_markdown_cell(title)
        extra = [nbformat.v4.new_markdown_cell(about_note(run, built, versions))]
        if rest.strip():
            extra.append(nbformat.v4.new_markdown_cell(rest.strip("\n")))
        cells[1:1] = extra
    else:
        cells.insert(0, nbformat.v4.new_markdown_cell(about_note(run, built, versions)))
    for cell in cells:
        tags = cell.metadata.get("tags", [])
        if "solution" in tags and "hide-cell" not in tags:
            cell.metadata["tags"] = [*tags, "hide-cell"]
        cell.metadata.pop("jupyter", None)
    return nb


def memo_chapters(text: str, chapters: list[Chapter]) -> str:
    """memo.md with each ``@chapters ANCHOR`` line replaced by links to the chapters that follow
    that section (from MEMO_SECTIONS or the notebooks' own metadata)."""
    def line(m: re.Match) -> str:
        found = [f"{{doc}}`chapters/{c.name}`" for c in chapters if m.group(1) in c.memo]
        return ("Chapters: " + ", ".join(found) + ".") if found else ""
    return re.sub(r"^@chapters (\w+)$", line, text, flags=re.MULTILINE)


def checkers_page(chapters: list[Chapter]) -> str:
    lines = ["# Exercise checkers", "",
             "Each chapter ends with exercises. You answer in the notebook, and `labkit.check` (its "
             "checkers are in `labkit/teach/exercises/`) checks the answer: it looks at what the lab measured (ports, "
             "mailboxes, events), never at printed text, and returns a result whose reason says "
             "what was right or what to look at:", "",
             "```python", "from labkit import check", 'check("00.1", lab, answer=587)',
             "```", "", "Here is the code of each chapter's checkers.", ""]
    for c in chapters:
        module = ROOT / "labkit" / "teach" / "exercises" / f"ch{c.number}.py"
        if not module.exists():
            continue
        lines += [f"(checkers-{c.number})=", f"## Chapter {c.number}: {c.name}", "",
                  f"`labkit/teach/exercises/ch{c.number}.py`, used by {{doc}}`chapters/{c.name}`.", "",
                  "```{literalinclude} " + f"_checkers/ch{c.number}.py", ":language: python", "```", ""]
    return "\n".join(lines)


def edition_switch(editions: list[Edition], current: Edition) -> str:
    """The language switch (HTML in the theme's announcement bar), when there are two editions."""
    if len(editions) < 2:
        return ""
    links = []
    for ed in editions:
        if ed is current:
            links.append(f"<strong>{html.escape(ed.label)}</strong>")
        else:
            links.append(f'<a class="labbook-edition" data-from="{current.subpath}" data-to="{ed.subpath}" '
                         f'href="#">{html.escape(ed.label)}</a>')
    return '<span class="labbook-editions">' + " · ".join(links) + "</span>"


def stage(edition: Edition, editions: list[Edition], runs: list[Run], dest: Path) -> None:
    import nbformat
    import yaml

    if dest.exists():
        shutil.rmtree(dest)
    (dest / "chapters").mkdir(parents=True)
    for name in ("intro.md", "glossary.md", "memo.md"):
        own = BOOK / edition.code / name        # an edition's own page, where it has one
        text = (own if own.exists() else BOOK / name).read_text(encoding="utf-8")
        if name == "memo.md":
            text = memo_chapters(text, edition.chapters)
        (dest / name).write_text(text, encoding="utf-8")
    shutil.copytree(BOOK / "_ext", dest / "_ext", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(BOOK / "_static", dest / "_static")
    if not MERMAID_JS.exists():
        raise BookError(f"{MERMAID_JS.relative_to(ROOT)} is missing: run `make node-packages` (npm ci)")
    shutil.copy(MERMAID_JS, dest / "_static" / "mermaid.min.js")
    (dest / "_notebooks").mkdir()
    (dest / "_checkers").mkdir()
    for c in edition.chapters:
        shutil.copy(c.path, dest / "_notebooks" / c.path.name)
        module = ROOT / "labkit" / "teach" / "exercises" / f"ch{c.number}.py"
        if module.exists():
            shutil.copy(module, dest / "_checkers" / module.name)
    (dest / "checkers.md").write_text(checkers_page(edition.chapters), encoding="utf-8")
    built = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = daemon_versions() if any(r.mode == "real" for r in runs) else ""
    for run in runs:
        nbformat.write(page_notebook(run, built, versions), dest / "chapters" / run.chapter.path.name)
    (dest / "_toc.yml").write_text(toc(edition), encoding="utf-8")
    config = yaml.safe_load((BOOK / "_config.yml").read_text(encoding="utf-8"))
    config["sphinx"]["config"]["language"] = edition.code
    switch = edition_switch(editions, edition)
    if switch:
        config["sphinx"]["config"]["html_theme_options"]["announcement"] = switch
        shutil.copy(BOOK / "_editions" / "labbook-editions.js", dest / "_static")
        config["sphinx"]["config"]["html_js_files"].append("labbook-editions.js")
    (dest / "_config.yml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False),
                                      encoding="utf-8")


def render(src: Path, out: Path) -> None:
    """jupyter-book build, warnings as errors, its html moved to ``out``."""
    work = src.parent / f"{src.name}-out"
    shutil.rmtree(work, ignore_errors=True)
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(src), "--path-output", str(work), "--warningiserror", "--keep-going", "--quiet"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise BookError("jupyter-book build failed:\n" + (p.stdout + p.stderr)[-6000:])
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(work / "_build" / "html"), str(out))
    shutil.rmtree(work, ignore_errors=True)


def build(jobs: int, use_cache: bool, only: set[str] | None = None) -> dict:
    t0 = time.monotonic()
    editions = find_editions()
    if not editions:
        raise BookError("no chapter found in notebooks/")
    if only:
        for ed in editions:
            ed.chapters = [c for c in ed.chapters if c.number in only]
    report = {"built": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "host": platform.node(), "cpus": os.cpu_count(), "jobs": jobs, "editions": {}}
    # Every chapter of every edition goes through one pool, then each edition is rendered.
    all_runs = execute_all([c for ed in editions for c in ed.chapters], jobs, use_cache)
    executed = time.monotonic() - t0
    by_path = {r.chapter.path: r for r in all_runs}
    shutil.rmtree(HTML, ignore_errors=True)
    for ed in editions:
        runs = [by_path[c.path] for c in ed.chapters]
        src = BUILD / "src" / ed.code
        stage(ed, editions, runs, src)
        render(src, HTML / ed.subpath if ed.subpath else HTML)
        report["editions"][ed.code] = {
            "html": str((HTML / ed.subpath).relative_to(ROOT)) if ed.subpath else str(HTML.relative_to(ROOT)),
            "chapters": {r.chapter.name: {"mode": r.mode, "seconds": round(r.seconds, 1), "cached": r.cached}
                         for r in runs}}
    # Rendering the first edition wiped HTML; the others were moved in after it.
    report["seconds"] = {"execute": round(executed, 1), "total": round(time.monotonic() - t0, 1)}
    (BUILD / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("BOOK_JOBS") or os.cpu_count() or 2),
                    help="chapters executed at a time (default: BOOK_JOBS, else the number of CPUs)")
    ap.add_argument("--no-cache", action="store_true", help="execute every chapter again")
    ap.add_argument("--only", help="comma-separated chapter numbers (a partial book, for trying things)")
    a = ap.parse_args(argv)
    try:
        report = build(a.jobs, not a.no_cache, set(a.only.split(",")) if a.only else None)
    except BookError as e:
        print(f"book: error: {e}", file=sys.stderr)
        return 1
    s = report["seconds"]
    modes: dict[str, int] = {}
    for ed in report["editions"].values():
        for ch in ed["chapters"].values():
            modes[ch["mode"]] = modes.get(ch["mode"], 0) + 1
    print(f"book: {', '.join(f'{n} {m}' for m, n in sorted(modes.items()))}; executed in {s['execute']} s, "
          f"built in {s['total']} s: {HTML.relative_to(ROOT)}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
