"""One lab Maildir as POP3 and IMAP see it: messages with UIDs, sizes, flags; delete, append.

A Maildir (see :mod:`labkit.net.mailbox.maildir`) is a folder with ``tmp/``, ``new/`` and ``cur/``.
A delivery puts a file into ``new/``; a mail reader that has seen it moves it to ``cur/`` and
adds its flags after ``:2,`` in the file name, one letter each, in ASCII order::

    cur/1718000000.M12P345Q1.mail.example.com:2,FS      (flagged and seen)

=========  ==============  =====================================================
letter     IMAP flag       meaning
=========  ==============  =====================================================
``D``      ``\\Draft``      a draft
``F``      ``\\Flagged``    flagged for attention ("starred")
``P``      (none)          passed on (forwarded); kept as it is
``R``      ``\\Answered``   replied to
``S``      ``\\Seen``       read
``T``      ``\\Deleted``    trashed: gone at the next IMAP EXPUNGE
=========  ==============  =====================================================

Maildir itself has no numbers, but IMAP needs a UID per message that never changes and is
never reused (RFC 3501 §2.3.1.1), and POP3's UIDL a unique id that lasts across sessions
(RFC 1939 §7). So the store keeps a small text file in the Maildir, ``labkit-uidlist``, much as
Dovecot keeps ``dovecot-uidlist``::

    labkit-uidlist 1 V1718000000 N4
    1 1718000000.M12P345Q1.mail.example.com
    3 1718000042.M99P345Q2.mail.example.com

The first line holds the UIDVALIDITY (``V``, made once from the clock) and the next UID to
give (``N``); each other line a UID and the Maildir key (the file name up to ``:2,``). Each
:meth:`MaildirStore.sync` gives new files the next UIDs, in the order they arrived, and
forgets files that are gone. The file is rewritten whole into a temporary file and renamed
over the old one, so a reader never sees half of it, and a lock file keeps two writers apart.

Sizes are what goes on the wire: the file holds LF line ends (as Postfix writes them), POP3
and IMAP send CRLF, so a message of 10 lines is 10 octets larger than its file.
"""
from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

try:  # POSIX: an advisory lock between processes; elsewhere the lab's one thread is enough
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from ...core.imap import MAILDIR_TO_IMAP
from ...errors import ConfigError, NotFound
from .maildir import deliver_to_folder, to_lf

#: The UID list's file name, inside the Maildir.
UIDLIST = "labkit-uidlist"
_MAGIC = "labkit-uidlist 1"

_KEY_OK = re.compile(r"^[^/\\\0:!]+$")


@dataclass(frozen=True)
class StoredMessage:
    """One message as the store sees it at the last :meth:`MaildirStore.sync`."""

    uid: int
    key: str  #: the Maildir key: the file name up to ``:2,``
    path: Path
    flags: str  #: Maildir info letters, e.g. ``"RS"``
    new: bool  #: still in ``new/``: no mail reader has taken it yet (IMAP's \\Recent)
    size: int  #: octets on the wire (CRLF line ends)
    internal_date: float  #: when it arrived (the file's mtime), seconds since the epoch

    @property
    def imap_flags(self) -> list[str]:
        """The IMAP system flags of this message, e.g. ``["\\\\Answered", "\\\\Seen"]``."""
        return [MAILDIR_TO_IMAP[c] for c in self.flags if c in MAILDIR_TO_IMAP]


def wire_size(data: bytes) -> int:
    """Octets of ``data`` once every bare LF is sent as CRLF."""
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


def to_wire(data: bytes) -> bytes:
    """``data`` with CRLF line ends (bare LFs turned into CRLF, existing CRLFs kept)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def split_name(name: str) -> tuple[str, str]:
    """A Maildir file name -> (key, flag letters). ``"K:2,SF"`` -> ``("K", "FS")``."""
    key, sep, info = name.partition(":")
    if sep and info.startswith("2,"):
        return key, "".join(sorted(set(info[2:])))
    return key, ""


def file_name(key: str, flags: str) -> str:
    """The ``cur/`` file name of ``key`` with ``flags``: letters sorted, no repeats."""
    return f"{key}:2,{''.join(sorted(set(flags)))}"


def new_uidvalidity() -> int:
    """A fresh UIDVALIDITY: the clock in seconds, which grows, as RFC 3501 §2.3.1.1 advises."""
    return max(1, int(time.time()) & 0xFFFFFFFF)


class MaildirStore:
    """A view of the Maildir at ``folder`` with stable UIDs (see the module's text).

    Every method works from the last :meth:`sync`; call it to see new mail. Nothing here
    holds the mailbox for long: a POP3 session's exclusive access is its server's business.
    """

    def __init__(self, folder: str | os.PathLike, *, create: bool = True):
        self.folder = Path(folder)
        if create:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            for sub in ("tmp", "new", "cur"):  # the order Maildir writers make them in
                (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.uidvalidity = 0
        self.uidnext = 1
        self._messages: dict[int, StoredMessage] = {}
        self._sizes: dict[str, tuple[int, int]] = {}  # key -> (file size, wire size)

    def __repr__(self) -> str:
        return f"<MaildirStore {self.folder} UIDVALIDITY={self.uidvalidity} UIDNEXT={self.uidnext}>"

    # -- the UID list -----------------------------------------------------------------------

    @property
    def uidlist_path(self) -> Path:
        return self.folder / UIDLIST

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover
            yield
            return
        with open(self.folder / (UIDLIST + ".lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _read_uidlist(self) -> tuple[int, int, dict[str, int]] | None:
        try:
            text = self.uidlist_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        lines = text.splitlines()
        if not lines or not lines[0].startswith(_MAGIC + " "):
            return None  # not ours, or damaged: start again with a new UIDVALIDITY
        validity = nxt = 0
        for word in lines[0][len(_MAGIC) + 1:].split():
            if word[:1] == "V" and word[1:].isdigit():
                validity = int(word[1:])
            elif word[:1] == "N" and word[1:].isdigit():
                nxt = int(word[1:])
        if validity <= 0 or nxt <= 0:
            return None
        uids: dict[str, int] = {}
        for line in lines[1:]:
            uid, _, key = line.partition(" ")
            if not uid.isdigit() or not key:
                return None
            if int(uid) >= nxt:
                nxt = int(uid) + 1
            uids[key] = int(uid)
        return validity, nxt, uids

    def _write_uidlist(self, validity: int, nxt: int, uids: dict[str, int]) -> None:
        lines = [f"{_MAGIC} V{validity} N{nxt}"]
        lines += [f"{uid} {key}" for key, uid in sorted(uids.items(), key=lambda kv: kv[1])]
        tmp = self.folder / f"{UIDLIST}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.uidlist_path)

    # -- scanning ---------------------------------------------------------------------------

    def _scan(self) -> dict[str, tuple[Path, str, bool, os.stat_result]]:
        """key -> (file, flags, in new/?, stat) for every message file on disk now."""
        found: dict[str, tuple[Path, str, bool, os.stat_result]] = {}
        for sub in ("new", "cur"):
            try:
                names = os.listdir(self.folder / sub)
            except FileNotFoundError:
                continue
            for name in names:
                if name.startswith("."):
                    continue
                key, flags = split_name(name)
                if sub == "new":
                    flags = ""
                path = self.folder / sub / name
                try:
                    st = path.stat()
                except FileNotFoundError:  # renamed or deleted while we looked
                    continue
                if key in found and sub == "new":
                    continue
                found[key] = (path, flags, sub == "new", st)
        return found

    def _wire_size(self, key: str, path: Path, file_size: int) -> int:
        cached = self._sizes.get(key)
        if cached and cached[0] == file_size:
            return cached[1]
        size = wire_size(path.read_bytes())
        self._sizes[key] = (file_size, size)
        return size

    def sync(self) -> list[StoredMessage]:
        """Look at the folder again: give new messages UIDs, forget removed ones.

        Returns every message, by UID (which is also the order they arrived in).
        """
        with self._locked():
            on_disk = self._scan()
            state = self._read_uidlist()
            if state is None:
                validity, nxt, uids = new_uidvalidity(), 1, {}
            else:
                validity, nxt, uids = state
            changed = state is None
            for key in [k for k in uids if k not in on_disk]:
                del uids[key]
                self._sizes.pop(key, None)
                changed = True
            newcomers = sorted((k for k in on_disk if k not in uids),
                               key=lambda k: (on_disk[k][3].st_mtime_ns, k))
            for key in newcomers:
                uids[key] = nxt
                nxt += 1
                changed = True
            if changed:
                self._write_uidlist(validity, nxt, uids)
        messages: dict[int, StoredMessage] = {}
        for key, uid in uids.items():
            path, flags, new, st = on_disk[key]
            try:
                size = self._wire_size(key, path, st.st_size)
            except FileNotFoundError:  # renamed (flags) by another reader since the scan
                size = st.st_size
            messages[uid] = StoredMessage(uid, key, path, flags, new, size, st.st_mtime)
        self.uidvalidity, self.uidnext = validity, nxt
        self._messages = dict(sorted(messages.items()))
        return list(self._messages.values())

    def messages(self) -> list[StoredMessage]:
        """The messages as of the last :meth:`sync`, by UID."""
        return list(self._messages.values())

    def get(self, uid: int) -> StoredMessage | None:
        """The message with ``uid`` as of the last sync (None if there is none)."""
        return self._messages.get(uid)

    def _current(self, uid: int) -> StoredMessage:
        msg = self._messages.get(uid)
        if msg is not None and msg.path.exists():
            return msg
        self.sync()
        msg = self._messages.get(uid)
        if msg is None:
            raise NotFound(f"message UID {uid} is no longer in {self.folder} (deleted by another session?)")
        return msg

    # -- reading and changing ---------------------------------------------------------------

    def read(self, uid: int, *, crlf: bool = True) -> bytes:
        """The raw message ``uid``: CRLF line ends as on the wire, or as stored with ``crlf=False``.

        KeyError if it is gone (another session deleted it).
        """
        for _ in range(3):
            msg = self._current(uid)
            try:
                data = msg.path.read_bytes()
            except FileNotFoundError:  # renamed between the check and the read: look again
                self.sync()
                continue
            return to_wire(data) if crlf else data
        raise NotFound(f"message UID {uid} keeps moving in {self.folder}")

    def set_flags(self, uid: int, flags: str) -> StoredMessage:
        """Give message ``uid`` exactly the Maildir ``flags`` (and move it to ``cur/``)."""
        msg = self._current(uid)
        flags = "".join(sorted(set(flags)))
        target = self.folder / "cur" / file_name(msg.key, flags)
        if target != msg.path:
            try:
                os.replace(msg.path, target)
            except FileNotFoundError:
                msg = self._current(uid)
                os.replace(msg.path, target)
        updated = StoredMessage(msg.uid, msg.key, target, flags, False, msg.size, msg.internal_date)
        self._messages[uid] = updated
        return updated

    def take_new(self, uid: int) -> StoredMessage:
        """Move ``uid`` from ``new/`` to ``cur/`` (its flags unchanged): a reader has seen it."""
        msg = self._current(uid)
        return self.set_flags(uid, msg.flags) if msg.new else msg

    def delete(self, uid: int) -> bool:
        """Remove message ``uid`` for good; False if it was already gone."""
        msg = self._messages.get(uid)
        for _ in range(3):
            if msg is None:
                return False
            try:
                msg.path.unlink()
            except FileNotFoundError:
                self.sync()
                msg = self._messages.get(uid)
                continue
            self._messages.pop(uid, None)
            self._sizes.pop(msg.key, None)
            return True
        return False

    def append(self, data: bytes, *, flags: str = "", internal_date: float | None = None) -> StoredMessage:
        """Add a message (IMAP APPEND, COPY): written into ``tmp/``, renamed into ``new/`` (so the
        next session sees it as \\Recent), or into ``cur/`` when it has ``flags``."""
        key, path = deliver_to_folder(self.folder, to_lf(data), mtime=internal_date)
        if not _KEY_OK.match(key):  # pragma: no cover - deliver_to_folder makes safe keys
            raise ConfigError("maildir key", f"unexpected file name {key!r}")
        target = self.folder / "cur" / file_name(key, flags) if flags else path
        if target != path:
            os.replace(path, target)
        for msg in self.sync():
            if msg.key == key:
                return msg
        raise NotFound(f"the appended message {key} vanished from {self.folder}")  # pragma: no cover
