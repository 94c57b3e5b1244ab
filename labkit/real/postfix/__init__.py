"""Real Postfix, run from the lab's sandbox: configuration, runner, and its mail log.

- :mod:`labkit.real.postfix.config` — :class:`PostfixConfig` renders main.cf, master.cf,
  sasl_passwd and aliases from typed values (and the memo's ``postconf -e`` lines), refuses bad
  values, writes them atomically and checks them with ``postconf -n`` and ``postfix check``.
- :mod:`labkit.real.postfix.runner` — :class:`PostfixRunner` starts, reloads and stops Postfix with
  ``postfix -c DIR``, submits with ``sendmail -C DIR``, lists and flushes the queue.
- :mod:`labkit.real.postfix.maillog` — the mail log as :class:`MaillogEvent` objects.

Importing this package runs nothing; Postfix is asked only when a function needs it.
"""
from .config import (
           PostfixConfig,
           Secret,
           Setting,
           check_config_dir,
           parse_relayhost,
           supported_map_types,
)
from .maillog import MaillogEvent
from .maillog import parse as parse_maillog
from .maillog import parse_line as parse_maillog_line
from .runner import (
           PostfixRunner,
           QueueEntry,
           make_traversable,
           require_postfix,
           sandbox_problem,
)

__all__ = [
           "MaillogEvent",
           "PostfixConfig",
           "PostfixRunner",
           "QueueEntry",
           "Secret",
           "Setting",
           "check_config_dir",
           "make_traversable",
           "parse_maillog",
           "parse_maillog_line",
           "parse_relayhost",
           "require_postfix",
           "sandbox_problem",
           "supported_map_types",
]
