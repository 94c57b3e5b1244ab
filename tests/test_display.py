"""Views of a transcript: HTML, Mermaid, ANSI; and tables. Pure: no sockets."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from labkit.teach.display import (Diagram, TranscriptView, hosts_table, mermaid_escape, reply_class, rows,
                            show)
from labkit.core.transcript import Line, Reply, Transcript, parse_reply_line, redact_command


def dialogue() -> Transcript:
    t = Transcript("pc.example.com", "mail.isp.example.net:587")
    for direction, text in [
        ("*", "connected to 127.0.30.25:587 from 127.0.20.100:41234"),
        ("S", "220 mail.isp.example.net ESMTP"),
        ("C", "EHLO pc.example.com"),
        ("S", "250-mail.isp.example.net"),
        ("S", "250-STARTTLS"),
        ("S", "250 AUTH PLAIN LOGIN"),
        ("C", "STARTTLS"),
        ("S", "220 2.0.0 Ready"),
        ("*", "TLS established: TLSv1.3 TLS_AES_256_GCM_SHA384"),
        ("C", "MAIL FROM:<alice@example.com>"),
        ("S", "250 OK"),
        ("C", "RCPT TO:<greylisted@inbox.example.org>"),
        ("S", "450 4.2.0 <greylisted@inbox.example.org>: try again later"),
        ("C", "RCPT TO:<bob@inbox.example.org>"),
        ("S", "550 5.7.1 relaying denied; \"see\" #policy"),
        ("C", "QUIT"),
        ("S", "221 Bye"),
    ]:
        t.add(direction, text)
    return t


def with_message() -> Transcript:
    t = Transcript("pc.example.com", "mx")
    for direction, text in [("C", "DATA"), ("S", "354 go ahead"), ("C", "Subject: hi; there"),
                            ("C", ""), ("C", "..dotted"), ("C", "."), ("S", "250 queued"),
                            ("C", "QUIT"), ("S", "221 bye")]:
        t.add(direction, text)
    return t


ENTITY = re.compile(r"#(?:\w+);")


def arrows(mermaid: str) -> list[str]:
    return [ln for ln in mermaid.splitlines() if "->>" in ln or "-->>" in ln]


# -- the transcript itself --------------------------------------------------------------------------

def test_replies_are_grouped_and_parsed():
    replies = dialogue().replies()
    assert [r.code for r in replies] == [220, 250, 220, 250, 450, 550, 221]
    ehlo = replies[1]
    assert ehlo.lines == ["mail.isp.example.net", "STARTTLS", "AUTH PLAIN LOGIN"]
    assert str(ehlo) == "250-mail.isp.example.net\n250-STARTTLS\n250 AUTH PLAIN LOGIN"
    assert replies[4].transient and replies[4].enhanced == "4.2.0" and not replies[4].ok
    assert replies[5].permanent and replies[5].enhanced == "5.7.1"
    assert replies[0].enhanced is None and replies[0].ok


@pytest.mark.parametrize("text, parsed", [
    ("250 OK", (250, False, "OK")), ("250-SIZE 10", (250, True, "SIZE 10")), ("221", (221, False, "")),
    ("hello", None), ("2500 x", None), ("", None), ("099 x", None),
])
def test_parse_reply_line(text, parsed):
    assert parse_reply_line(text) == parsed


def test_reply_from_wire_refuses_mixed_codes():
    assert Reply.from_wire(["250-a", "250 b"]) == Reply(250, ["a", "b"])
    with pytest.raises(ValueError):
        Reply.from_wire(["250-a", "251 b"])


@pytest.mark.parametrize("line, recorded", [
    ("AUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm", "AUTH PLAIN ****"),
    ("auth login dGlt", "auth login ****"),
    ("AUTH LOGIN", "AUTH LOGIN"),
    ("MAIL FROM:<a@b>", "MAIL FROM:<a@b>"),
])
def test_redact_command(line, recorded):
    assert redact_command(line) == recorded


def test_text_and_json():
    t = dialogue()
    text = t.to_text()
    assert text.splitlines()[1] == "S: 220 mail.isp.example.net ESMTP"
    assert text.splitlines()[2] == "C: EHLO pc.example.com"
    assert text.splitlines()[0].startswith("*  connected")
    assert Transcript.from_json(t.to_json()) == t
    with pytest.raises(ValueError):
        Line("X", "what", 0.0)


# -- HTML ------------------------------------------------------------------------------------------

def test_html_escapes_addresses():
    html = TranscriptView(dialogue()).to_html()
    assert "&lt;alice@example.com&gt;" in html
    assert "<alice@example.com>" not in html
    assert "&quot;see&quot;" in html


def test_html_colour_classes():
    html = TranscriptView(dialogue())._repr_html_()
    assert len(re.findall(r'class="labkit-line labkit-c"', html)) == 6
    assert html.count("labkit-2xx") == 7  # 220, three lines of 250, 220, 250, 221
    assert html.count("labkit-4xx") == 1
    assert html.count("labkit-5xx") == 1
    assert html.count("labkit-note") == 2
    assert "mail.isp.example.net:587" in html and "pc.example.com" in html


def test_message_lines_are_marked():
    kinds = [r.kind for r in rows(with_message())]
    assert kinds == ["command", "3xx", "message", "message", "message", "command", "2xx", "command", "2xx"]
    assert "labkit-message" in TranscriptView(with_message()).to_html()


@pytest.mark.parametrize("text, cls", [("250 ok", "2xx"), ("354 go", "3xx"), ("421 bye", "4xx"),
                                       ("554 no", "5xx"), ("junk", "bad")])
def test_reply_class(text, cls):
    assert reply_class(text) == cls


# -- Mermaid ---------------------------------------------------------------------------------------

def test_mermaid_one_arrow_per_line_of_dialogue():
    t = dialogue()
    src = TranscriptView(t).to_mermaid()
    assert src.startswith("sequenceDiagram")
    wire_lines = [ln for ln in t if ln.direction in "CS"]
    assert len(arrows(src)) == len(wire_lines)
    assert "participant C as pc.example.com" in src
    assert "participant S as mail.isp.example.net:587" in src
    assert src.count("Note over C,S:") == 2
    assert sum(a.strip().startswith("C->>S:") for a in arrows(src)) == 6


def test_mermaid_has_no_raw_special_characters():
    src = TranscriptView(dialogue()).to_mermaid()
    texts = [ln.split(" as ", 1)[1] if "participant" in ln else ln.split(":", 1)[1]
             for ln in src.splitlines()[1:]]  # what follows the syntax: the learner's text
    bare = ENTITY.sub("", "\n".join(texts))
    for ch in ";<>\"":
        assert ch not in bare
    assert "#" not in bare
    assert "MAIL FROM:#lt;alice@example.com#gt;" in src
    assert "relaying denied#59; #quot;see#quot; #35;policy" in src


def test_mermaid_message_is_one_arrow():
    src = TranscriptView(with_message()).to_mermaid()
    labels = [a.split(": ", 1)[1] for a in arrows(src)]
    assert labels == ["DATA", "354 go ahead", "(the message: 3 lines, Subject: hi#59; there)", ".",
                      "250 queued", "QUIT", "221 bye"]


def test_mermaid_escape_cuts_long_lines():
    out = mermaid_escape("x" * 200, width=20)
    assert len(out) == 20 and out.endswith("…")


def test_markdown_is_a_mermaid_block():
    md = TranscriptView(dialogue())._repr_markdown_()
    assert md.startswith("```mermaid\nsequenceDiagram\n") and md.endswith("\n```")
    assert isinstance(TranscriptView(dialogue()).diagram(), Diagram)


# -- ANSI ------------------------------------------------------------------------------------------

def test_ansi_without_colour_is_plain_text():
    out = TranscriptView(dialogue()).to_ansi(color=False)
    assert "\x1b" not in out
    assert out == dialogue().to_text()


def test_ansi_with_colour():
    lines = TranscriptView(dialogue()).to_ansi(color=True).splitlines()
    assert all(ln.startswith("\x1b[") and ln.endswith("\x1b[0m") for ln in lines)
    assert lines[12].startswith("\x1b[33m")  # 450: amber
    assert lines[14].startswith("\x1b[1;31m")  # 550: red


def test_ansi_respects_no_color(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b" not in TranscriptView(dialogue()).to_ansi()


# -- show, tables, import hygiene ----------------------------------------------------------------

def test_show_accepts_anything_with_a_transcript():
    class HasOne:
        transcript = dialogue()

    shown = show(HasOne())
    assert repr(shown) == dialogue().to_text()
    assert callable(shown._ipython_display_)


def test_hosts_table():
    table = hosts_table([{"host": "mail.example.com", "port": 25},
                         {"host": "<evil>", "what": "a|b", "port": None}])
    assert table.columns == ["host", "port", "what"]
    html = table._repr_html_()
    assert "&lt;evil&gt;" in html and "<evil>" not in html
    md = table.to_markdown().splitlines()
    assert md[0] == "| host | port | what |" and md[1] == "|---|---|---|"
    assert md[3] == "| &lt;evil&gt; |  | a\\|b |"  # Markdown passes raw HTML through


def test_import_does_not_pull_in_ipython():
    code = "import sys, labkit.teach.display, labkit.net.clients.smtp; print('IPython' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
