"""SASL PLAIN taken apart, for teaching, without ever showing the password (chapter 05).

The memo logs in at its ISP by typing ``AUTH PLAIN 認証用文字列`` ("the string for
authentication"). That string is base64 of ``authzid NUL user NUL password`` (RFC 4616)::

    $ printf '\\0alice@isp.example.net\\0PASSWORD' | base64

:func:`labkit.net.clients.smtp.auth_plain_string` builds it; this module reads one back.
:func:`decode_plain` splits it into its three parts, and the result never prints the password:
base64 is an encoding, not encryption, so the string itself is as secret as the password, and
:func:`mask` is the only form of it a notebook should show. :func:`check_plain` compares a
string with an expected login and says what differs, without echoing either.
:func:`plain_string_by_shell` computes it the way the memo's reader would, with ``printf`` and
``base64``, passing the secret on standard input (never on a command line).
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..real import tools
from ..result import Result

__all__ = ["PlainParts", "decode_plain", "mask", "check_plain", "plain_string_by_shell"]


@dataclass(frozen=True)
class PlainParts:
    """The three NUL-separated parts of an ``AUTH PLAIN`` string. The password is kept but
    never shown: ``repr`` and ``str`` give only its length."""

    authzid: str  #: who to act as; empty means "the same as user" (the usual case)
    user: str  #: the login (authcid)
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return (f"PlainParts(authzid={self.authzid!r}, user={self.user!r}, "
                f"password=<hidden, {len(self.password)} characters>)")

    def summary(self) -> str:
        authz = repr(self.authzid) if self.authzid else "'' (empty: act as the user itself)"
        return (f"3 parts separated by NUL: authzid {authz}, user {self.user!r}, "
                f"password <hidden, {len(self.password)} characters>")

    __str__ = summary


def _b64decode(text: str) -> bytes:
    text = text.strip()
    if not text:
        raise ConfigError("AUTH PLAIN string", "is empty", "build it with auth_plain_string(user, password)")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("AUTH PLAIN string", "is not base64 (letters, digits, + / and = padding only, "
                          "length a multiple of 4)", "build it with auth_plain_string(user, password)") from None


def decode_plain(text: str) -> PlainParts:
    """Split an ``AUTH PLAIN`` argument into authzid, user and password (RFC 4616 section 2).

    Raises :class:`~labkit.errors.ConfigError` saying why if it is not base64 of three
    NUL-separated UTF-8 parts. The error never contains the decoded bytes.
    """
    raw = _b64decode(text)
    parts = raw.split(b"\0")
    if len(parts) != 3:
        raise ConfigError("AUTH PLAIN string", f"decodes to {len(parts)} NUL-separated part(s), not 3",
                          "it is base64 of authzid NUL user NUL password; with an empty authzid it "
                          "starts with a NUL (printf '\\0user\\0password')")
    try:
        authzid, user, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        raise ConfigError("AUTH PLAIN string", "its parts are not UTF-8 text (RFC 4616 wants UTF-8)") from None
    return PlainParts(authzid, user, password)


def mask(text: str) -> str:
    """What may be shown of an ``AUTH PLAIN`` string: that it is base64, and how long.

        >>> mask("AGFsaWNlAHNlY3JldA==")
        '<base64, 20 characters: hidden, it carries the password>'
    """
    return f"<base64, {len(text.strip())} characters: hidden, it carries the password>"


def check_plain(text: str, user: str, password: str, authzid: str = "") -> Result:
    """Does ``text`` log in as ``user`` with ``password``? The reason says which part differs
    and never shows the password or the string."""
    try:
        parts = decode_plain(text)
    except ConfigError as e:
        return Result(False, str(e))
    if parts.authzid != authzid:
        return Result(False, f"the first part (authzid) is {parts.authzid!r}; it should be "
                      f"{authzid!r}" + (" (empty): the string starts with a NUL" if not authzid else ""))
    if parts.user != user:
        return Result(False, f"the second part (user) is {parts.user!r}, not {user!r}")
    if parts.password != password:
        return Result(False, f"user {user!r} is right, but the third part is not that account's "
                      f"password (yours has {len(parts.password)} characters; not shown)")
    return Result(True, f"base64 of NUL {user} NUL <password>: the right login for {user} "
                  "(password not shown)", {"user": user})


#: the memo reader's way: read user and password from standard input, printf with NULs, base64
_SHELL = r"""IFS= read -r u; IFS= read -r p; printf '\0%s\0%s' "$u" "$p" | base64 | tr -d '\n'"""


def plain_string_by_shell(user: str, password: str) -> str | None:
    """The same string computed by ``printf '\\0%s\\0%s' USER PASSWORD | base64``, as a
    reader of the memo would in a terminal; None where ``sh`` is not available.

    User and password go to the shell on standard input, never as arguments, so they appear
    in no command line or process list.
    """
    if "\n" in user or "\n" in password:
        raise ConfigError("user/password", "holds a line break", "lab accounts have none")
    run = tools.run(["sh", "-c", _SHELL], input=f"{user}\n{password}\n", timeout=10)
    return run.stdout.strip() if run.ok else None
