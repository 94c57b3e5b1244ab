"""Real Dovecot, run from the lab's sandbox: POP3, IMAP, LMTP and SMTP AUTH for mail.example.com.

- :mod:`labkit.real.dovecot.config` — :class:`DovecotConfig` renders a complete dovecot.conf and a
  passwd file (hashed passwords) for the lab accounts, refuses bad values, writes atomically,
  hands the Maildir tree to the mail user, and checks with ``doveconf -n``.
- :mod:`labkit.real.dovecot.runner` — :class:`DovecotRunner` starts ``dovecot -F -c CONF``, waits for
  IMAP's greeting, stops quickly and surely, and reads the log.

Importing this package runs nothing; Dovecot is asked only when a function needs it.
"""
from .config import (
           LISTENERS,
           DovecotConfig,
           check_conf,
           free_port,
           hash_password,
           verify_ssha512,
)
from .runner import DovecotRunner, require_dovecot

__all__ = [
           "LISTENERS",
           "DovecotConfig",
           "DovecotRunner",
           "check_conf",
           "free_port",
           "hash_password",
           "require_dovecot",
           "verify_ssha512",
]
