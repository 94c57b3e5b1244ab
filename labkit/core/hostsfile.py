"""The lab's host names in ``/etc/hosts``, for mail clients that check a certificate by name.

The lab DNS answers on its own port, which the system resolver does not ask, so
``mail.example.com`` resolves nowhere else; and mbsync or fetchmail check the server's
certificate against the host name they were given (``certificate owner does not match
hostname 127.0.20.25``). Lines in ``/etc/hosts`` make the names resolve to the lab's loopback
addresses for every program on the machine. Each line ``labkit hosts`` writes ends with
:data:`MARKER`, so that it can take exactly those lines away again and leave the rest alone::

    127.0.20.25	mail.example.com	# Mail Lab (labkit hosts)

Pure text in, text out; the CLI reads and writes the file (``labkit hosts --apply``).
"""
from __future__ import annotations

from collections.abc import Iterable

#: The comment that ends every line labkit adds, and the only lines it removes.
MARKER = "# Mail Lab (labkit hosts)"
#: The file the system resolver reads; ``LABKIT_HOSTS_FILE`` or ``--file`` name another.
DEFAULT_PATH = "/etc/hosts"


def lab_lines(hosts: Iterable[tuple[str, str]]) -> list[str]:
    """One marked line per ``(address, name)``: ``127.0.20.25\\tmail.example.com\\t# Mail Lab ...``."""
    return [f"{address}\t{name}\t{MARKER}" for address, name in hosts]


def is_lab_line(line: str) -> bool:
    return line.rstrip().endswith(MARKER)


def without_lab_lines(text: str) -> str:
    """``text`` (a hosts file) without the lines labkit added; every other line as it was."""
    return "".join(line for line in text.splitlines(keepends=True) if not is_lab_line(line))


def with_lab_lines(text: str, lines: list[str]) -> str:
    """``text`` with exactly ``lines`` as its lab lines, at the end: applying twice changes nothing."""
    kept = without_lab_lines(text)
    if kept and not kept.endswith("\n"):
        kept += "\n"
    return kept + "".join(line + "\n" for line in lines)
