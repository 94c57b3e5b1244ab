"""Lab mailboxes in Maildir format: deliver, list, read, wait.

Maildir (https://cr.yp.to/proto/maildir.html) is how Postfix's ``virtual`` agent and Dovecot
keep mail: a folder with ``tmp/``, ``new/`` and ``cur/``, one file per message. A message is
written into ``tmp/`` under a name no other writer can pick, then renamed into ``new/``, so a
reader never sees half a message and no lock is needed.

Each lab address has its folder at ``SANDBOX/mail/DOMAIN/LOCAL`` (see
:meth:`labkit.net.context.LabContext.mailbox_dir`). Files hold lines ending in a bare LF, as
Postfix writes them; :func:`read_message` can give the CRLF form that goes on the wire.

Every operation costs what it touches, not what the mailbox holds:

- a delivery writes one file and renames it; it never lists the folder;
- the headers a listing shows are kept in ``labkit-index`` inside the Maildir, one JSON line a
  message, written by the delivery (or, for mail another program delivered, by the first
  listing that meets it). The files themselves stay the truth: a listing reads the folder's
  names, and the index only spares it from opening every message again;
- a process keeps what it has read of each folder, and looks again only when ``new/`` or
  ``cur/`` changed (their modification times), reading only the index lines and messages that
  are new since;
- :func:`wait_for_delivery` wakes as soon as this process delivers a message; mail delivered by
  another process (Dovecot, in real mode) is seen by the next cheap look.
"""
from __future__ import annotations

import email.errors
import email.header
import itertools
import json
import mailbox
import os
import re
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError, NotFound

if TYPE_CHECKING:
    from ..context import LabContext

#: The index of a Maildir's headers, one JSON object a line (see the module's text).
INDEX = "labkit-index"
#: How much of a message is read for its headers when it is indexed.
HEAD_BYTES = 65536
#: How many folders a process keeps listings of (the least recently listed is dropped).
CACHED_FOLDERS = 32


@dataclass(frozen=True)
class Delivery:
    """Where :func:`deliver` put a message."""

    address: str
    key: str  #: the Maildir key (the file name up to the ``:2,`` flags)
    path: Path  #: the raw message file


@dataclass(frozen=True)
class MessageInfo:
    """One message of a mailbox, as ``labkit mailbox ADDRESS`` lists it."""

    key: str
    path: Path
    size: int  #: octets on disk
    sender: str  #: the From: header
    to: str
    subject: str
    date: str
    message_id: str
    folder: str = "INBOX"  #: INBOX, or the Maildir++ subfolder it was filed in (e.g. Spam)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``from`` rather than ``sender``, the path as a string)."""
        return {"key": self.key, "path": str(self.path), "size": self.size, "to": self.to,
                "subject": self.subject, "date": self.date, "message_id": self.message_id,
                "folder": self.folder, "from": self.sender}


def mailbox_folder(ctx: "LabContext", address: str) -> Path:
    """The Maildir folder of ``address``, refusing names that would leave ``SANDBOX/mail``."""
    return ctx.mailbox_dir(address)


def to_lf(message: bytes) -> bytes:
    """CRLF line ends (SMTP's) to LF (a Maildir file's)."""
    return message.replace(b"\r\n", b"\n")


def to_crlf(message: bytes) -> bytes:
    """LF line ends to CRLF, without doubling existing CRs."""
    return to_lf(message).replace(b"\n", b"\r\n")


# -- delivery ---------------------------------------------------------------------------------

_count = itertools.count()
_HOSTNAME = socket.gethostname().replace("/", r"\057").replace(":", r"\072")


def _unique_name() -> str:
    """A Maildir name no other delivery picks: time, microseconds, process, a counter, host
    (the form Python's :class:`mailbox.Maildir` and Postfix use)."""
    now = time.time()
    return f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_count)}.{_HOSTNAME}"


def _write_new(folder: Path, data: bytes, mtime: float | None) -> tuple[str, Path, os.stat_result]:
    key = _unique_name()
    tmp = folder / "tmp" / key
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if mtime is not None:
            os.utime(fd, (mtime, mtime))
        st = os.fstat(fd)
    finally:
        os.close(fd)
    path = folder / "new" / key
    os.rename(tmp, path)
    return key, path, st


def deliver_to_folder(folder: str | os.PathLike, message: bytes, *,
                      mtime: float | None = None) -> tuple[str, Path]:
    """Add ``message`` to the Maildir at ``folder`` (made if missing); return (key, file).

    ``mtime``: the time the message arrived, if not now (IMAP APPEND with a date).
    """
    folder = Path(folder)
    data = to_lf(message)
    try:
        key, path, st = _write_new(folder, data, mtime)
    except FileNotFoundError:  # the first message: make the Maildir (tmp, new, cur), then again
        folder.parent.mkdir(parents=True, exist_ok=True)  # Maildir makes only the last folder
        mailbox.Maildir(folder, factory=None, create=True)
        for sub in ("tmp", "new", "cur"):  # a folder that existed without them
            (folder / sub).mkdir(mode=0o700, exist_ok=True)
        key, path, st = _write_new(folder, data, mtime)
    _append_index(folder, [_entry(key, st.st_mtime, st.st_size, data)])
    _delivered(folder)
    return key, path


def subfolder(mailbox: Path, folder: str | None) -> Path:
    """The Maildir of ``folder`` inside a mailbox: INBOX is the mailbox itself; another folder
    is a Maildir++ subfolder ``.NAME`` (the layout Dovecot and Courier use)."""
    if not folder or folder.upper() == "INBOX":
        return mailbox
    if not folder.replace("-", "").replace("_", "").isalnum():
        raise ConfigError("folder", f"{folder!r} is not a plain folder name", "use letters and digits, e.g. Spam")
    return mailbox / f".{folder}"


def deliver(ctx: "LabContext", address: str, message: bytes, folder: str | None = None) -> Delivery:
    """Deliver ``message`` (the raw bytes, headers first) into the lab mailbox of ``address``,
    into its INBOX or into ``folder`` (e.g. ``"Spam"``)."""
    box = mailbox_folder(ctx, address)
    target = subfolder(box, folder)
    if target != box and not (target / "maildirfolder").exists():
        box.parent.mkdir(parents=True, exist_ok=True)
        mailbox.Maildir(box, factory=None, create=True)  # the INBOX first, then the subfolder
        mailbox.Maildir(target, factory=None, create=True)
        (target / "maildirfolder").touch()  # Maildir++: marks a subfolder
    key, path = deliver_to_folder(target, message)
    _give_to_mail_owner(ctx.sandbox / "mail", path)
    return Delivery(address.lower(), key, path)


def _give_to_mail_owner(root: Path, path: Path) -> None:
    """In real mode Dovecot reads the Maildirs as user ``mail`` and the lab hands ``root`` over
    to it; what root delivers afterwards (the provider's MX, say) is handed over too, from
    the new file up to ``root``, so that Dovecot can read it and set its flags."""
    if os.geteuid() != 0:
        return
    try:
        owner = root.stat()
    except FileNotFoundError:
        return
    if owner.st_uid == 0:
        return
    p = path
    while p != root and root in p.parents:
        st = p.stat()
        if (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
            os.chown(p, owner.st_uid, owner.st_gid)
            if p.is_dir():
                for sub in ("tmp", "new", "cur", "maildirfolder", INDEX):
                    q = p / sub
                    if q.exists() and q.stat().st_uid != owner.st_uid:
                        os.chown(q, owner.st_uid, owner.st_gid)
        p = p.parent


# -- waiting ----------------------------------------------------------------------------------

_delivery = threading.Condition()
_deliveries = 0  #: messages delivered by this process so far


def _delivered(folder: Path) -> None:
    global _deliveries
    with _delivery:
        _deliveries += 1
        _delivery.notify_all()


def deliveries() -> int:
    """How many messages this process has delivered so far (to any Maildir)."""
    return _deliveries


def wait_for_delivery(since: int, timeout: float) -> bool:
    """Wait until this process delivers a message after :func:`deliveries` said ``since``, at
    most ``timeout`` seconds; True if one was delivered."""
    with _delivery:
        return _delivery.wait_for(lambda: _deliveries != since, timeout)


# -- the index --------------------------------------------------------------------------------

def _header_text(value: Any) -> str:
    """A header as a reader sees it: unfolded, encoded words (RFC 2047) decoded."""
    if value is None:
        return ""
    if isinstance(value, email.header.Header):
        value = str(value)
    text = re.sub(r"\r?\n(?=[ \t])", "", str(value)).strip()
    if "=?" in text:
        try:
            text = str(email.header.make_header(email.header.decode_header(text)))
        except (ValueError, LookupError, email.errors.HeaderParseError):
            pass  # shown as it is written
    return text


_parser = BytesHeaderParser(policy=compat32)


def _entry(key: str, mtime: float, size: int, head: bytes) -> dict[str, Any]:
    """The index line of a message: its key, arrival time, size and the headers a listing shows."""
    end = head.find(b"\n\n")
    headers = _parser.parsebytes(head if end < 0 else head[:end + 1])
    return {"key": key, "mtime": mtime, "size": size, "from": _header_text(headers["From"]),
            "to": _header_text(headers["To"]), "subject": _header_text(headers["Subject"]),
            "date": _header_text(headers["Date"]), "message_id": _header_text(headers["Message-ID"])}


def _append_index(folder: Path, entries: list[dict[str, Any]]) -> None:
    """Add lines to the folder's index in one write (O_APPEND: writers never interleave lines)."""
    data = "".join(json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n" for e in entries)
    try:
        fd = os.open(folder / INDEX, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError:
        return  # a reader without write access: it indexes for itself only
    try:
        os.write(fd, data.encode("utf-8"))
    finally:
        os.close(fd)


class _Folder:
    """What this process has read of one Maildir: its index entries and the names on disk."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.entries: dict[str, dict[str, Any]] = {}  #: key -> index entry not yet listed
        self.offset = 0  #: how far the index file has been read
        self.names: dict[str, tuple[str, str]] = {}  #: key -> (sub, file name) as last listed
        self.mtimes: tuple[int, int] = (-1, -1)  #: new/ and cur/ when last listed
        self.listed_at = 0.0  #: wall-clock time of that listing
        self.infos: list[MessageInfo] | None = None  #: the last listing, while nothing changed
        #: key -> (file name, (arrival, key, MessageInfo)) of the last listing, reused while unchanged
        self.made: dict[str, tuple[str, tuple[float, str, MessageInfo]]] = {}
        self.order_last: tuple[float, str] | None = None  #: (arrival, key) of the newest listed

    def _read_index(self) -> None:
        try:
            with open(self.path / INDEX, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:  # none yet, or not ours to read: every message is read from its file
            return
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        lines = data[:end].splitlines()
        try:  # all at once, as one JSON array: most of the cost of a listing from a fresh process
            entries = json.loads(b"[" + b",".join(lines) + b"]") if lines else []
            self.entries.update((e["key"], e) for e in entries)
        except (ValueError, KeyError, TypeError):
            for line in lines:
                try:
                    e = json.loads(line)
                    self.entries[e["key"]] = e
                except (ValueError, KeyError, TypeError):
                    continue  # a damaged line: that message is indexed again from its file
        self.offset += end

    def _list_names(self) -> bool:
        """Read the names in new/ and cur/ again if either changed; True if they were read."""
        try:
            mtimes = (os.stat(self.path / "new").st_mtime_ns, os.stat(self.path / "cur").st_mtime_ns)
        except FileNotFoundError:
            self.names, self.mtimes = {}, (-1, -1)
            return True
        # a change within the same clock tick as the last listing leaves the mtime as it was:
        # trust an unchanged mtime only once the listing was clearly later than it
        if mtimes == self.mtimes and self.listed_at > max(mtimes) / 1e9 + 0.05:
            return False
        started = time.time()
        names: dict[str, tuple[str, str]] = {}
        for sub in ("new", "cur"):
            try:
                listed = os.listdir(self.path / sub)
            except FileNotFoundError:
                continue
            for name in listed:
                if name.startswith("."):
                    continue
                key = name.split(":", 1)[0]
                if sub == "new" or key not in names:  # mid-rename, new/ wins (as MaildirStore)
                    names[key] = (sub, name)
        self.names, self.mtimes, self.listed_at = names, mtimes, started
        return True

    def list(self) -> list[MessageInfo]:
        with self.lock:
            if not _complete(self.path):  # not yet made, or being made by a delivery right now
                return []
            if not self._list_names() and self.infos is not None:
                return self.infos
            self._read_index()
            added = []
            for key in self.names.keys() - self.entries.keys() - self.made.keys():  # not indexed yet
                sub, name = self.names[key]
                try:
                    with open(self.path / sub / name, "rb") as f:
                        head = f.read(HEAD_BYTES)
                        st = os.fstat(f.fileno())
                except FileNotFoundError:
                    self.mtimes = (-1, -1)  # moved to cur/ or deleted since: look again next time
                    continue
                added.append(_entry(key, st.st_mtime, st.st_size, head))
            if added:
                for e in added:
                    self.entries[e["key"]] = e
                _append_index(self.path, added)  # read back (harmlessly) with the next new lines
            made: dict[str, tuple[str, tuple[float, str, MessageInfo]]] = {}
            fresh: list[tuple[float, str, MessageInfo]] = []  # new keys, or files renamed
            dirs = {"new": self.path / "new", "cur": self.path / "cur"}
            previous = self.made
            for key, (sub, name) in self.names.items():
                old = previous.get(key)
                if old is not None and old[0] == name:
                    made[key] = old  # unchanged since the last listing: the same MessageInfo
                    continue
                e = self.entries.pop(key, None)  # made into a MessageInfo, the entry is not kept
                if old is not None:  # renamed (flags, or new/ to cur/)
                    item = (old[1][0], key, replace(old[1][2], path=dirs[sub] / name))
                    made[key] = (name, item)
                    fresh.append(item)
                elif e is not None:
                    item = (e["mtime"], key, MessageInfo(key, dirs[sub] / name, e["size"], e["from"], e["to"],
                                                         e["subject"], e["date"], e["message_id"]))
                    made[key] = (name, item)
                    fresh.append(item)
            self.made = made
            fresh.sort(key=_order)
            grown = len(made) == len(previous) + len(fresh) and not any(t[1] in previous for t in fresh)
            if self.infos is not None and grown and (not fresh or self.order_last is None
                                                     or _order(fresh[0]) >= self.order_last):
                if fresh:  # only newer messages: appended, nothing sorted again
                    self.infos = self.infos + [t[2] for t in fresh]
                    self.order_last = _order(fresh[-1])
            else:
                items = sorted((m[1] for m in made.values()), key=_order)
                self.infos = [t[2] for t in items]
                self.order_last = _order(items[-1]) if items else None
            return self.infos


def _order(item: tuple[float, str, MessageInfo]) -> tuple[float, str]:
    """How a listing is sorted: by arrival, then by key."""
    return item[0], item[1]


_folders: "OrderedDict[Path, _Folder]" = OrderedDict()
_folders_lock = threading.Lock()


def _folder(path: Path) -> _Folder:
    with _folders_lock:
        f = _folders.get(path)
        if f is None:
            f = _folders[path] = _Folder(path)
            while len(_folders) > CACHED_FOLDERS:
                _folders.popitem(last=False)
        else:
            _folders.move_to_end(path)
        return f


def _complete(folder: Path) -> bool:
    """Whether the Maildir at ``folder`` has all of tmp/, new/ and cur/ (made in that order)."""
    return all((folder / sub).is_dir() for sub in ("tmp", "new", "cur"))


def list_folder(folder: str | os.PathLike) -> list[MessageInfo]:
    """The messages of the Maildir at ``folder``, oldest first (empty if it does not exist)."""
    return list(_folder(Path(folder)).list())


def list_messages(ctx: "LabContext", address: str) -> list[MessageInfo]:
    """The messages in the mailbox of ``address``, oldest first (empty if it has none yet)."""
    return list_folder(mailbox_folder(ctx, address))


def mailbox_infos(folder: str | os.PathLike) -> list[MessageInfo]:
    """Every message of a mailbox, its INBOX then its subfolders (Spam...), as MessageInfo."""
    folder = Path(folder)
    infos = list_folder(folder)
    try:
        subs = sorted(e.name for e in os.scandir(folder) if e.name.startswith(".") and e.is_dir())
    except FileNotFoundError:
        subs = []
    for sub in subs:
        infos += [replace(i, folder=sub[1:]) for i in list_folder(folder / sub)]
    return infos


def list_mailbox(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Every message of a mailbox, its INBOX then its subfolders (Spam...), as JSON-ready
    dicts (``key``, ``path``, ``size``, ``from``, ``to``, ``subject``, ``date``,
    ``message_id``, ``folder``): what ``labkit mailbox ADDRESS --json`` prints."""
    return [info.as_dict() for info in mailbox_infos(folder)]


def _file_of(folder: Path, key: str) -> Path:
    """The file that holds ``key``: ``new/KEY`` or ``cur/KEY:2,FLAGS``."""
    p = folder / "new" / key
    if p.exists():
        return p
    known = _folder(folder)
    for attempt in range(2):
        if attempt:
            list_folder(folder)
        entry = known.names.get(key)
        if entry is not None and (folder / entry[0] / entry[1]).exists():
            return folder / entry[0] / entry[1]
    raise NotFound(f"no message {key!r} in {folder}; list the mailbox to see its keys")


def read_message(ctx: "LabContext", address: str, key: str, *, crlf: bool = False) -> bytes:
    """The raw bytes of message ``key`` (LF line ends as stored, or CRLF with ``crlf=True``)."""
    folder = mailbox_folder(ctx, address)
    if not _complete(folder):
        raise NotFound(f"the mailbox of {address} is empty (no folder {folder} yet)")
    data = _file_of(folder, key).read_bytes()
    return to_crlf(data) if crlf else data
