"""What a notebook (or a terminal) shows of a recorded dialogue, and small tables.

:class:`TranscriptView` turns a :class:`~labkit.core.transcript.Transcript` into

* HTML (``_repr_html_``): one line per row, ``C:`` lines of the client and ``S:`` lines of the
  server in different colours; 4xx replies amber, 5xx red; notes grey and italic. Colours are
  tints and borders over the theme's own text colour, so light and dark JupyterLab themes both
  read well;
* a Mermaid sequence diagram (``to_mermaid()``, ``_repr_markdown_``): one arrow per line of
  dialogue, the message itself as one arrow, notes (TLS started...) as ``Note over``.
  JupyterLab 4.1 and later draws ```` ```mermaid ```` blocks in Markdown output;
* ANSI text for terminals (``to_ansi()``), which ``labkit send`` prints.

:func:`show` displays both the HTML transcript and the diagram in Jupyter; :func:`hosts_table`
renders a list of dicts as a table; :func:`send_result_html` is how a
:class:`~labkit.net.clients.smtp.SendResult` shows in a notebook. Importing this module does no
I/O and does not import IPython (it is imported when something is displayed).
"""
from __future__ import annotations

import html
import os
import re
import sys
from typing import Any, Iterable, Mapping

from ..core.transcript import CLIENT, NOTE, SERVER, Row, Transcript, reply_class, rows, to_ansi
from ..i18n import N_, _

__all__ = ["TranscriptView", "Diagram", "Shown", "Table", "show", "send_result_html", "hosts_table", "rows",
           "Row", "escape_html", "mermaid_escape", "reply_class"]


def escape_html(text: str) -> str:
    """``<alice@example.com>`` -> ``&lt;alice@example.com&gt;`` (quotes too)."""
    return html.escape(text, quote=True)


_MERMAID_ENTITIES = {"#": "#35;", ";": "#59;", "<": "#lt;", ">": "#gt;", '"': "#quot;", "'": "#39;"}
_MERMAID_SPECIAL = re.compile("[#;<>\"']")


def mermaid_escape(text: str, width: int = 80) -> str:
    """Text made safe for a Mermaid message or name, cut to ``width`` characters.

    Mermaid ends a message at ``;`` and ``#`` and reads ``<``/``>`` as HTML, so these (and
    quotes) become its entity codes: ``#lt;`` ``#gt;`` ``#59;`` ``#35;`` ``#quot;`` ``#39;``::

        >>> mermaid_escape("MAIL FROM:<alice@example.com>")
        'MAIL FROM:#lt;alice@example.com#gt;'
    """
    if len(text) > width:
        text = text[:width - 1] + "…"
    return _MERMAID_SPECIAL.sub(lambda m: _MERMAID_ENTITIES[m.group()], text)


# -- HTML --------------------------------------------------------------------------------------

#: (tint, border) per kind: tints are translucent so that the theme's text colour shows through
_HTML_STYLE = {
    "command": ("rgba(47,129,247,0.10)", "#2f81f7"),
    "message": ("rgba(47,129,247,0.05)", "#2f81f7"),
    "2xx": ("rgba(45,164,78,0.10)", "#2da44e"),
    "3xx": ("rgba(45,164,78,0.10)", "#2da44e"),
    "4xx": ("rgba(217,119,6,0.18)", "#d97706"),
    "5xx": ("rgba(220,38,38,0.18)", "#dc2626"),
    "bad": ("rgba(220,38,38,0.18)", "#dc2626"),
    "note": ("transparent", "#8b949e"),
}


def _html_row(row: Row) -> str:
    tint, border = _HTML_STYLE[row.kind]
    css = f"labkit-line labkit-{'c' if row.direction == CLIENT else 's' if row.direction == SERVER else 'note'}"
    if row.direction == SERVER:
        css += f" labkit-{row.kind}"
    elif row.kind == "message":
        css += " labkit-message"
    prefix = {CLIENT: "C:", SERVER: "S:", NOTE: "*"}[row.direction]
    note_style = "font-style:italic;opacity:0.7;" if row.direction == NOTE else ""
    return (f'<div class="{css}" title="+{row.offset:.3f} s" style="background:{tint};'
            f'border-left:3px solid {border};padding:0 0.5em;white-space:pre-wrap;{note_style}">'
            f'<span style="color:{border};font-weight:bold;display:inline-block;width:2.5em">{prefix}</span>'
            f'{escape_html(row.text)}</div>')


def _color_wanted(stream: Any = None) -> bool:
    """Colour for a terminal, unless NO_COLOR is set (https://no-color.org) or it is not a tty."""
    if os.environ.get("NO_COLOR"):
        return False
    stream = stream if stream is not None else sys.stdout
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class TranscriptView:
    """A transcript as HTML, Mermaid, Markdown, ANSI or plain text.

    ``TranscriptView(t)`` as the last expression of a cell shows the HTML; ``.diagram()``
    gives the Mermaid sequence diagram; :func:`show` gives both. It also accepts anything
    with a ``.transcript`` (a RawSMTP, a SendResult).
    """

    def __init__(self, transcript: Transcript | Any):
        self.transcript: Transcript = getattr(transcript, "transcript", transcript)

    def __repr__(self) -> str:
        return self.transcript.to_text()

    # HTML
    def to_html(self) -> str:
        t = self.transcript
        legend = (f'<div class="labkit-legend" style="opacity:0.75;margin-bottom:0.3em">'
                  f'C: {escape_html(t.client_name)} &nbsp;&nbsp; S: {escape_html(t.server_name)}</div>')
        body = "".join(_html_row(r) for r in rows(t))
        return ('<div class="labkit-transcript" style="font-family:var(--jp-code-font-family,monospace);'
                'font-size:var(--jp-code-font-size,0.9em);line-height:1.4;'
                f'overflow-wrap:anywhere">{legend}{body}</div>')

    def _repr_html_(self) -> str:
        return self.to_html()

    # Mermaid
    def to_mermaid(self, width: int = 80) -> str:
        """A Mermaid ``sequenceDiagram``: an arrow per command and per reply line, the
        message as one arrow, each note as ``Note over``."""
        t = self.transcript
        out = ["sequenceDiagram",
               f"    participant C as {mermaid_escape(t.client_name, width)}",
               f"    participant S as {mermaid_escape(t.server_name, width)}"]
        message: list[str] = []
        arrow = "C->>S"
        for row in rows(t):
            if row.kind == "message":
                if not message:  # the message goes the way its lines went (RETR: server to client)
                    arrow = "S-->>C" if row.direction == SERVER else "C->>S"
                message.append(row.text)
                continue
            if message:
                out.append(f"    {arrow}: {mermaid_escape(_message_label(message), width)}")
                message = []
            if row.direction == CLIENT:
                out.append(f"    C->>S: {mermaid_escape(row.text, width)}")
            elif row.direction == SERVER:
                out.append(f"    S-->>C: {mermaid_escape(row.text, width)}")
            else:
                out.append(f"    Note over C,S: {mermaid_escape(row.text, width)}")
        if message:
            out.append(f"    {arrow}: {mermaid_escape(_message_label(message), width)}")
        return "\n".join(out)

    def diagram(self) -> "Diagram":
        return Diagram(self.to_mermaid())

    def _repr_markdown_(self) -> str:
        return self.diagram()._repr_markdown_()

    # text
    def to_text(self) -> str:
        return self.transcript.to_text()

    def to_ansi(self, color: bool | None = None) -> str:
        """The classic ``C:``/``S:`` text, coloured for a terminal.

        ``color=None`` colours only when standard output is a terminal and NO_COLOR is unset.
        """
        return to_ansi(self.transcript, _color_wanted() if color is None else color)


def _message_label(lines: list[str]) -> str:
    subject = next((ln for ln in lines if ln.lower().startswith("subject:")), None)
    if subject:
        return _(N_("(the message: {count} lines, {subject})")).format(count=len(lines), subject=subject)
    return _(N_("(the message: {count} lines)")).format(count=len(lines))


class Diagram:
    """A Mermaid diagram that Jupyter shows as a ```` ```mermaid ```` Markdown block."""

    def __init__(self, source: str):
        self.source = source

    def _repr_markdown_(self) -> str:
        return f"```mermaid\n{self.source}\n```"

    def __repr__(self) -> str:
        return self.source


class Shown:
    """The HTML transcript followed by its sequence diagram (what :func:`show` returns)."""

    def __init__(self, view: TranscriptView):
        self.view = view

    def _ipython_display_(self) -> None:
        # IPython only where something is displayed
        from IPython.display import display

        display(self.view)
        display(self.view.diagram())

    def __repr__(self) -> str:
        return self.view.to_text()


def show(transcript: Transcript | Any) -> Shown:
    """Show a dialogue in Jupyter: the coloured transcript, then the sequence diagram.

    Accepts a Transcript or anything with one (``RawSMTP``, ``SendResult``). Outside Jupyter
    the returned object prints as the plain ``C:``/``S:`` text.
    """
    return Shown(TranscriptView(transcript))


def send_result_html(result: Any) -> str:
    """A :class:`~labkit.net.clients.smtp.SendResult` as HTML: its outcome, then its transcript."""
    status = "labkit-ok" if result.ok else "labkit-fail"
    return (f'<div class="labkit-result {status}"><b>{escape_html(str(result))}</b></div>'
            + TranscriptView(result.transcript).to_html())


def _register_formatters() -> None:
    """Teach a running IPython how to show a SendResult (the client, a floor down, knows no HTML).

    Only where IPython is already loaded and a shell runs: this imports nothing and does no I/O.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None:
        html_formatter = shell.display_formatter.formatters["text/html"]
        html_formatter.for_type_by_name("labkit.net.clients.smtp", "SendResult", send_result_html)


_register_formatters()


# -- tables ------------------------------------------------------------------------------------

class Table:
    """Rows of dicts as a table: HTML in Jupyter, Markdown with ``to_markdown()``."""

    def __init__(self, data: Iterable[Mapping[str, Any]], columns: list[str] | None = None):
        self.rows = [dict(r) for r in data]
        if columns is None:
            columns = []
            for r in self.rows:
                columns.extend(k for k in r if k not in columns)
        self.columns = columns

    def _cell(self, row: Mapping[str, Any], col: str) -> str:
        value = row.get(col, "")
        return "" if value is None else str(value)

    def to_html(self) -> str:
        th = "".join(f'<th style="text-align:left">{escape_html(_(c))}</th>' for c in self.columns)
        trs = "\n".join("<tr>" + "".join(f'<td style="text-align:left">{escape_html(self._cell(r, c))}</td>'
                                         for c in self.columns) + "</tr>" for r in self.rows)
        return f'<table class="labkit-table">\n<thead><tr>{th}</tr></thead>\n<tbody>\n{trs}\n</tbody>\n</table>'

    def _repr_html_(self) -> str:
        return self.to_html()

    def to_markdown(self) -> str:
        def cell(text: str) -> str:
            text = html.escape(text, quote=False)  # Markdown passes raw HTML through
            return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

        head = "| " + " | ".join(cell(_(c)) for c in self.columns) + " |"
        rule = "|" + "|".join("---" for _ in self.columns) + "|"
        body = ["| " + " | ".join(cell(self._cell(r, c)) for c in self.columns) + " |" for r in self.rows]
        return "\n".join([head, rule, *body])

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        widths = [max([len(_(c)), *(len(self._cell(r, c)) for r in self.rows)]) for c in self.columns]
        lines = ["  ".join(_(c).ljust(w) for c, w in zip(self.columns, widths)).rstrip(),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(self._cell(r, c).ljust(w) for c, w in zip(self.columns, widths)).rstrip()
                  for r in self.rows]
        return "\n".join(lines)


def hosts_table(rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None) -> Table:
    """A table of the lab hosts (or any list of dicts); columns in order of first appearance."""
    return Table(rows, columns)
