"""Lab mailboxes in Maildir format: deliver, list, read.

Maildir (https://cr.yp.to/proto/maildir.html) is how Postfix's ``virtual`` agent and Dovecot
keep mail: a folder with ``tmp/``, ``new/`` and ``cur/``, one file per message. A message is
written into ``tmp/`` and then renamed into ``new/``, so a reader never sees half a message and
no lock is needed. Python's :class:`mailbox.Maildir` does exactly that.

Each lab address has its folder at ``SANDBOX/mail/DOMAIN/LOCAL`` (see
:meth:`labkit.net.context.LabContext.mailbox_dir`). Files hold lines ending in a bare LF, as
Postfix writes them; :func:`read_message` can give the CRLF form that goes on the wire.
"""
from __future__ import annotations

import email.policy
import mailbox
import os
from dataclasses import asdict, dataclass, replace
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError, NotFound

if TYPE_CHECKING:
    from ..context import LabContext


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
        d = asdict(self)
        d["from"] = d.pop("sender")
        d["path"] = str(self.path)
        return d


def mailbox_folder(ctx: "LabContext", address: str) -> Path:
    """The Maildir folder of ``address``, refusing names that would leave ``SANDBOX/mail``."""
    return ctx.mailbox_dir(address)


def to_lf(message: bytes) -> bytes:
    """CRLF line ends (SMTP's) to LF (a Maildir file's)."""
    return message.replace(b"\r\n", b"\n")


def to_crlf(message: bytes) -> bytes:
    """LF line ends to CRLF, without doubling existing CRs."""
    return to_lf(message).replace(b"\n", b"\r\n")


def _file_of(md: mailbox.Maildir, folder: Path, key: str) -> Path:
    """The file that holds ``key``: ``new/KEY`` or ``cur/KEY:2,FLAGS``."""
    for sub in ("new", "cur"):
        for name in os.listdir(folder / sub):
            if name == key or name.startswith(key + md.colon):
                return folder / sub / name
    raise NotFound(f"no message {key!r} in {folder}; list the mailbox to see its keys")


def deliver_to_folder(folder: str | os.PathLike, message: bytes) -> tuple[str, Path]:
    """Add ``message`` to the Maildir at ``folder`` (made if missing); return (key, file)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)  # Maildir makes only the last folder
    md = mailbox.Maildir(folder, factory=None, create=True)
    key = md.add(to_lf(message))
    return key, _file_of(md, folder, key)


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
    if target != box:
        box.parent.mkdir(parents=True, exist_ok=True)
        mailbox.Maildir(box, factory=None, create=True)  # the INBOX first, then the subfolder
    key, path = deliver_to_folder(target, message)
    if target != box:
        (target / "maildirfolder").touch()  # Maildir++: marks a subfolder
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
                for sub in ("tmp", "new", "cur", "maildirfolder"):
                    q = p / sub
                    if q.exists() and q.stat().st_uid != owner.st_uid:
                        os.chown(q, owner.st_uid, owner.st_gid)
        p = p.parent


def _info(key: str, path: Path) -> MessageInfo:
    with path.open("rb") as f:
        headers = BytesHeaderParser(policy=email.policy.default).parse(f)
    def h(name: str) -> str:
        value = headers.get(name)
        return "" if value is None else str(value)
    return MessageInfo(key, path, path.stat().st_size, h("From"), h("To"), h("Subject"),
                       h("Date"), h("Message-ID"))


def _complete(folder: Path) -> bool:
    """Whether the Maildir at ``folder`` has all of tmp/, new/ and cur/ (made in that order)."""
    return all((folder / sub).is_dir() for sub in ("tmp", "new", "cur"))


def list_folder(folder: str | os.PathLike) -> list[MessageInfo]:
    """The messages of the Maildir at ``folder``, oldest first (empty if it does not exist)."""
    folder = Path(folder)
    if not _complete(folder):  # not yet made, or being made by a delivery right now
        return []
    md = mailbox.Maildir(folder, factory=None, create=False)
    infos = [_info(key, _file_of(md, folder, key)) for key in md.keys()]
    return sorted(infos, key=lambda i: (i.path.stat().st_mtime, i.key))


def list_messages(ctx: "LabContext", address: str) -> list[MessageInfo]:
    """The messages in the mailbox of ``address``, oldest first (empty if it has none yet)."""
    return list_folder(mailbox_folder(ctx, address))


def list_mailbox(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Every message of a mailbox, its INBOX then its subfolders (Spam...), as JSON-ready
    dicts (``key``, ``path``, ``size``, ``from``, ``to``, ``subject``, ``date``,
    ``message_id``, ``folder``): what ``labkit mailbox ADDRESS --json`` prints."""
    folder = Path(folder)
    infos = list_folder(folder)
    if folder.is_dir():
        for sub in sorted(p for p in folder.iterdir() if p.name.startswith(".") and p.is_dir()):
            infos += [replace(i, folder=sub.name[1:]) for i in list_folder(sub)]
    return [info.as_dict() for info in infos]


def read_message(ctx: "LabContext", address: str, key: str, *, crlf: bool = False) -> bytes:
    """The raw bytes of message ``key`` (LF line ends as stored, or CRLF with ``crlf=True``)."""
    folder = mailbox_folder(ctx, address)
    if not _complete(folder):
        raise NotFound(f"the mailbox of {address} is empty (no folder {folder} yet)")
    md = mailbox.Maildir(folder, factory=None, create=False)
    data = _file_of(md, folder, key).read_bytes()
    return to_crlf(data) if crlf else data
