"""The checks every real daemon's configuration shares: pure, each raising
``ConfigError(field, reason, hint)``.

One line of text, a TCP port, an absolute path, a DNS name: what main.cf, opendkim.conf and
dovecot.conf all need. :mod:`labkit.real.postfix.config`, :mod:`labkit.real.opendkim.config`
and :mod:`labkit.real.dovecot.config` add what their own files forbid.
"""
from __future__ import annotations

import os
import re
from typing import Any

from ..errors import ConfigError

#: One DNS label (RFC 1123): letters, digits and inner hyphens, at most 63 octets.
LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")

_LINE_BREAKERS = (("\r", "a carriage return (CR)"), ("\n", "a line feed (LF)"), ("\0", "a NUL byte"))


def check_line(name: str, value: Any, hint: str) -> str:
    """Text on one line: no CR, LF or NUL (each would start a new entry in the file).

    The message says what is wrong, never the value: ``value`` may be a password."""
    if not isinstance(value, str):
        raise ConfigError(name, f"expected text, got {type(value).__name__}")
    for ch, what in _LINE_BREAKERS:
        if ch in value:
            raise ConfigError(name, f"contains {what}", hint)
    return value


def check_port(name: str, value: Any, hint: str = "give an integer from 1 to 65535") -> int:
    """A TCP port, 1 to 65535 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(name, f"{value!r} is not a TCP port", hint)
    return value


def check_absolute_path(name: str, value: str, hint: str) -> str:
    """A path given from ``/``: a daemon started elsewhere must find the same file."""
    if not os.path.isabs(value):
        raise ConfigError(name, f"{value!r} is not an absolute path", hint)
    return value


def is_dns_name(value: str) -> bool:
    """Dot-separated DNS labels, a final dot allowed, at most 253 octets."""
    host = value.removesuffix(".")
    return bool(host) and len(host) <= 253 and all(LABEL.match(label) for label in host.split("."))
