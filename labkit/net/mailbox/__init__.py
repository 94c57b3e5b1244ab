"""Mailbox access for the lab: POP3 and IMAP over the lab's Maildirs, with STARTTLS and
implicit TLS, in the lab's own event loop (embedded mode; real mode runs Dovecot instead).

=======  ================  =====  ===================================================
role     host              plays  what it does
=======  ================  =====  ===================================================
pop3     mail.example.com  110    POP3 (RFC 1939); STLS before any password
pop3s    mail.example.com  995    POP3 with implicit TLS
imap     mail.example.com  143    IMAP4rev1 (RFC 3501); LOGINDISABLED until STARTTLS
imaps    mail.example.com  993    IMAP with implicit TLS
=======  ================  =====  ===================================================

Every lab account that has a password can log in, with its full address as the user name,
and reaches its own mailbox (``SANDBOX/mail/DOMAIN/LOCAL``)::

    server = await start_imap(ctx)                     # on the lab's event loop
    print(server.host, server.port, server.standard_port)   # 127.0.20.25, ephemeral, 143
    await server.close()

:class:`MaildirStore` is the view both servers share: messages with UIDs that last across
sessions (kept in ``labkit-uidlist`` in the Maildir), sizes as sent, flags as Maildir letters.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .access import MailAccessServer
    from .imap import ImapServer, start_imap
    from .pop3 import Pop3Server, start_pop3
    from .store import MaildirStore, StoredMessage

#: name -> the module that defines it, loaded on first use: ``labkit mailbox`` needs only
#: :mod:`.maildir`, not the servers (whose imports cost more than listing 10,000 messages)
_NAMES = {"start_imap": "imap", "ImapServer": "imap", "MailAccessServer": "access", "start_pop3": "pop3",
          "Pop3Server": "pop3", "MaildirStore": "store", "StoredMessage": "store"}

__all__ = ["start_pop3", "start_imap", "Pop3Server", "ImapServer", "MailAccessServer", "MaildirStore",
           "StoredMessage"]


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    globals()[name] = value
    return value
