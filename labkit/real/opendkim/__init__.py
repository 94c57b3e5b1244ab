"""Real OpenDKIM, run from the lab's sandbox: configuration, keys, runner, and its log.

- :mod:`labkit.real.opendkim.config` — :class:`OpenDKIMConfig` renders opendkim.conf, KeyTable,
  SigningTable (``refile:``), TrustedHosts and the resolver configuration that points OpenDKIM
  at the lab DNS; refuses bad values; writes atomically; checks with ``opendkim -n``.
  :func:`genkey` (the memo's ``opendkim-genkey``) and :func:`install_key` (a key made by
  :class:`labkit.core.auth.dkim.DKIMKey`) put keys where OpenDKIM's safe-key check accepts them.
- :mod:`labkit.real.opendkim.runner` — :class:`OpenDKIMRunner` starts ``opendkim -f -x CONF``, waits
  for its milter socket, stops it quickly and surely; :func:`testkey` runs ``opendkim-testkey``
  against the lab DNS; :meth:`OpenDKIMRunner.verify_message` verifies with ``opendkim -t``.
- :mod:`labkit.real.opendkim.syslog` — OpenDKIM logs only through syslog(3): a tiny catcher for
  those datagrams, and its lines as :class:`OpenDKIMEvent` objects.

Importing this package runs nothing; OpenDKIM is asked only when a function needs it.
"""
from .config import (
           OpenDKIMConfig,
           SigningKey,
           folder_problem,
           genkey,
           install_key,
           key_file_problem,
           milter_fields,
           parse_genkey_txt,
           parse_socket,
           read_conf,
)
from .runner import (
           OpenDKIMRunner,
           listening_ports,
           namespace_available,
           parse_test_mode,
           parse_testkey,
           require_opendkim,
           testkey,
)
from .syslog import OpenDKIMEvent, SyslogCatcher, classify, parse_datagram, parse_line

__all__ = [
           "OpenDKIMConfig",
           "OpenDKIMEvent",
           "OpenDKIMRunner",
           "SigningKey",
           "SyslogCatcher",
           "classify",
           "folder_problem",
           "genkey",
           "install_key",
           "key_file_problem",
           "listening_ports",
           "milter_fields",
           "namespace_available",
           "parse_datagram",
           "parse_genkey_txt",
           "parse_line",
           "parse_socket",
           "parse_test_mode",
           "parse_testkey",
           "read_conf",
           "require_opendkim",
           "testkey",
]
