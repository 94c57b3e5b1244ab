"""Reading Postfix's mail log as structured events (pure: strings in, dataclasses out).

Postfix writes one line per thing that happened. With ``maillog_file`` set (no syslog in the
lab) a line looks like this::

    Nov 29 14:07:18 mail postfix/smtp[1234]: 4XYZ12AB: to=<bob@inbox.example.org>,
        relay=127.0.30.25[127.0.30.25]:2525, delay=0.09, delays=0.01/0/0.05/0.03,
        dsn=2.0.0, status=sent (250 OK)

that is: a time stamp, the host name, the program (``postfix/smtp`` is the SMTP *client*,
``postfix/smtpd`` the SMTP *server*), its process id, then usually a **queue id** (the name of
the message in the queue, which ties together every line about one message) and the text.

:func:`parse_line` turns one line into a :class:`MaillogEvent` whose ``kind`` says what
happened; :func:`parse` does a whole log. The kinds:

==========  ==================================================================================
kind        details
==========  ==================================================================================
connect     ``client`` (``name[address]``), ``address``
disconnect  ``client``, ``address``, ``commands`` (the counters Postfix appends)
client      an smtpd accepted a message from ``client`` (queue id assigned)
queued      cleanup: ``message_id``; qmgr: ``from``, ``size``, ``nrcpt``; pickup: ``from``, ``uid``
tls         ``direction`` (``to`` for the client, ``from`` for the server), ``trust``
            (``verified``, ``trusted``, ``untrusted``, ``anonymous``), ``verified`` (bool),
            ``peer``, ``protocol``, ``cipher``
sasl        ``ok`` (bool); smtp client failure: ``server``, ``reply``; smtpd success:
            ``sasl_method``, ``sasl_username``, ``client``; smtpd failure: ``mechanism``, ``text``
status      ``to``, ``relay``, ``delay``, ``delays``, ``dsn``, ``status`` (sent, deferred,
            bounced, expired...), ``reason`` (the text in parentheses: what the peer said),
            ``sasl_failed`` (the smarthost refused the login: the memo's wrong password)
reject      ``stage``, ``client``, ``reply`` (an smtpd refused: ``NOQUEUE: reject: ...``)
removed     the message left the queue (delivered, or bounced and returned)
started     the master daemon started (``version``, ``configuration``)
reloaded    the master daemon re-read its configuration (``postfix reload``)
stopped     the master daemon is terminating
warning,    ``text``: what Postfix complains about (``fatal`` and ``panic`` stop the program)
error,
fatal,
panic
info        any other line (``text``)
==========  ==================================================================================

Every event keeps the original ``line``; nothing here needs Postfix installed, so the parser is
tested with lines as Postfix 3.7 writes them.
"""
from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: ``Nov 29 14:07:18`` (classic syslog stamp, no year) or an RFC 3339 stamp.
_LINE = re.compile(
    r"^(?P<time>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:?\d\d)?)"
    r" (?P<host>\S+) (?P<process>[\w./-]+)\[(?P<pid>\d+)\]: (?P<text>.*)$")

#: A short queue id is upper-case hex; a long one (``enable_long_queue_ids``) mixes cases.
_QUEUE_ID = re.compile(r"^(?P<qid>[0-9A-F]{6,14}|[0-9A-Za-z]{12,20}|NOQUEUE): (?P<rest>.*)$")

_SEVERITY = re.compile(r"^(?P<sev>warning|error|fatal|panic): (?P<text>.*)$")
_CLIENT = re.compile(r"(?P<name>[^\s\[]+)\[(?P<address>[^\]]*)\]")
_TLS = re.compile(
    r"^(?P<trust>Verified|Trusted|Untrusted|Anonymous) TLS connection established "
    r"(?P<direction>to|from) (?P<peer>\S+?):? (?P<protocol>[\w.]+) with cipher (?P<cipher>\S+)")
_SASL_CLIENT_FAIL = re.compile(r"^SASL authentication failed; (?:server (?P<server>\S+) said: )?(?P<reply>.*)$")
_SASL_SERVER_FAIL = re.compile(r"^(?P<client>\S+): SASL (?P<mech>\S+) authentication failed: ?(?P<text>.*)$")
_REJECT = re.compile(r"^(?P<stage>reject|milter-reject|discard|hold): (?P<cmd>\S+) from (?P<client>\S+): (?P<reply>.*)$")
_KEYVALS = re.compile(r"(?P<key>[a-z_]+)=(?P<value><[^>]*>|[^,\s]*)")
_STATUS_REASON = re.compile(r"status=(?P<status>\w+)(?: \((?P<reason>.*)\))?$")

_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


@dataclass(frozen=True)
class MaillogEvent:
    """One line of the Postfix mail log, understood."""

    time: _dt.datetime | None  #: when (local time for classic stamps; they carry no zone)
    process: str  #: ``postfix/smtp``, ``postfix/smtpd``, ``postfix/submission/smtpd``...
    pid: int
    queue_id: str | None  #: the message's name in the queue, or None (``NOQUEUE`` too)
    kind: str  #: see the module docstring
    details: dict[str, Any] = field(default_factory=dict)
    line: str = ""  #: the line as Postfix wrote it

    @property
    def program(self) -> str:
        """The last part of ``process``: ``smtp``, ``smtpd``, ``qmgr``, ``cleanup``..."""
        return self.process.rsplit("/", 1)[-1]

    def __getitem__(self, key: str) -> Any:
        return self.details[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.details.get(key, default)


def parse_time(stamp: str, now: _dt.datetime | None = None) -> _dt.datetime | None:
    """Read a maillog time stamp.

    The classic ``Nov 29 14:07:18`` has no year: it is taken from ``now``, or the year before
    when that would put the line more than a day in the future (a log read just after New Year).
    """
    if stamp[:4].isdigit():
        try:
            return _dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return None
    now = now or _dt.datetime.now()
    month = _MONTHS.get(stamp[:3])
    if month is None:
        return None
    day = int(stamp[4:6])
    hh, mm, ss = (int(x) for x in stamp[7:].split(":"))
    try:
        when = _dt.datetime(now.year, month, day, hh, mm, ss)
    except ValueError:  # Feb 29 of another year
        return None
    if when - now > _dt.timedelta(days=1):
        when = when.replace(year=now.year - 1)
    return when


def _client_details(text: str) -> dict[str, str]:
    m = _CLIENT.search(text)
    return {"client": m.group(0), "address": m.group("address")} if m else {}


def _keyvals(text: str) -> dict[str, str]:
    """``to=<a@b>, relay=x[1.2.3.4]:25, delay=0.1`` -> a dict (angle brackets dropped)."""
    out = {}
    for m in _KEYVALS.finditer(text):
        value = m.group("value")
        if value.startswith("<") and value.endswith(">"):
            value = value[1:-1]
        out.setdefault(m.group("key"), value)
    return out


def _classify(process: str, text: str) -> tuple[str, dict[str, Any]]:
    """Kind and details of a message text (after the queue id, if any)."""
    program = process.rsplit("/", 1)[-1]
    m = _SEVERITY.match(text)
    if m:
        sev, body = m.group("sev"), m.group("text")
        sasl = _SASL_SERVER_FAIL.match(body)
        if sasl and sev == "warning":
            return "sasl", {"ok": False, "side": "server", "mechanism": sasl.group("mech"),
                            "text": sasl.group("text"), **_client_details(sasl.group("client"))}
        return sev, {"text": body}
    m = _TLS.match(text)
    if m:
        return "tls", {"trust": m.group("trust").lower(), "direction": m.group("direction"),
                       "peer": m.group("peer"), "protocol": m.group("protocol"),
                       "cipher": m.group("cipher"), "verified": m.group("trust") in ("Verified", "Trusted")}
    m = _SASL_CLIENT_FAIL.match(text)
    if m:
        return "sasl", {"ok": False, "side": "client", "server": m.group("server"), "reply": m.group("reply")}
    if text.startswith("connect from "):
        return "connect", _client_details(text)
    if text.startswith("disconnect from "):
        d: dict[str, Any] = _client_details(text)
        d["commands"] = {k: v for k, v in (kv.split("=", 1) for kv in text.split()[3:] if "=" in kv)}
        return "disconnect", d
    m = _REJECT.match(text)
    if m:
        return "reject", {"stage": m.group("stage"), "command": m.group("cmd"),
                          "client": m.group("client"), "reply": m.group("reply")}
    m = _STATUS_REASON.search(text)
    if m and text.startswith(("to=", "orig_to=")):
        d = _keyvals(text[:m.start()])
        d["status"] = m.group("status")
        d["reason"] = m.group("reason") or ""
        if re.fullmatch(r"\d+(?:\.\d+)?", d.get("delay", "")):
            d["delay"] = float(d["delay"])
        # The smarthost refused the login: Postfix says so only here, in the deferral reason.
        d["sasl_failed"] = d["reason"].startswith("SASL authentication failed")
        return "status", d
    if text.startswith("client="):
        d = _keyvals(text)
        if "sasl_method" in d or "sasl_username" in d:
            return "sasl", {"ok": True, "side": "server", **d}
        return "client", d
    if text.startswith("message-id="):
        return "queued", {"message_id": text[len("message-id="):].strip("<>")}
    if text.startswith("from=") and program in ("qmgr", "pickup"):
        d = _keyvals(text)
        if "size" in d:
            d["size"] = int(d["size"])
        if "nrcpt" in d:
            d["nrcpt"] = int(d["nrcpt"])
        return "queued", d
    if text.startswith("uid=") and program == "pickup":
        return "queued", _keyvals(text)
    if text == "removed":
        return "removed", {}
    if program == "master" and text.startswith("daemon started"):
        m = re.search(r"version (?P<v>[\w.-]+), configuration (?P<c>\S+)", text)
        return "started", ({"version": m.group("v"), "configuration": m.group("c")} if m else {})
    if program == "master" and text.startswith("reload"):
        return "reloaded", {"text": text}
    if program == "master" and text.startswith("terminating"):
        return "stopped", {"text": text}
    return "info", {"text": text}


def parse_line(line: str, now: _dt.datetime | None = None) -> MaillogEvent | None:
    """Understand one maillog line; None if it is not a Postfix log line at all."""
    line = line.rstrip("\r\n")
    m = _LINE.match(line)
    if not m:
        return None
    text = m.group("text")
    queue_id = None
    q = _QUEUE_ID.match(text)
    if q and not _SEVERITY.match(text):
        queue_id = None if q.group("qid") == "NOQUEUE" else q.group("qid")
        text = q.group("rest")
    kind, details = _classify(m.group("process"), text)
    return MaillogEvent(parse_time(m.group("time"), now), m.group("process"), int(m.group("pid")),
                        queue_id, kind, details, line)


def parse(text: str | Iterable[str], now: _dt.datetime | None = None) -> list[MaillogEvent]:
    """Every Postfix line of a log (a string or an iterable of lines), in order."""
    lines = text.splitlines() if isinstance(text, str) else text
    return [ev for ev in (parse_line(ln, now) for ln in lines) if ev is not None]


def select(events: Iterable[MaillogEvent], kind: str | None = None, queue_id: str | None = None,
           **match: Any) -> list[MaillogEvent]:
    """The events of ``kind`` (and ``queue_id``) whose details contain every ``match`` item."""
    return [e for e in events if (kind is None or e.kind == kind)
            and (queue_id is None or e.queue_id == queue_id)
            and all(e.details.get(k) == v for k, v in match.items())]
