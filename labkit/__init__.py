"""labkit: the helper package of Mail Lab, and its one public face.

    from labkit import Lab
    with Lab() as lab:
        result = lab.send("alice@example.com", "bob@inbox.example.org", subject="Hello")
        lab.wait_for_mail("bob@inbox.example.org")

Chapters and users import from here only: ``from labkit import Lab, check, display``. Every
name below is loaded on first use, so ``import labkit`` is quick and does no I/O; the modules
behind the names stand on floors (see ARCHITECTURE.md):

- foundation: the one exception hierarchy (``LabError`` and its kinds, see ``labkit.errors``),
  ``Result``;
- ``labkit.core`` (pure): ``world``, ``pki``, ``trace``, ``dns`` (zones, resolver, lookups),
  ``auth`` and ``spf``, ``dkim``, ``dmarc`` (sender authentication), ``report_xml``;
- ``labkit.net`` (embedded servers and clients): ``RawSMTP``, ``send_message``, ``RawPOP3``,
  ``RawIMAP``, ...;
- ``labkit.real`` (Postfix, OpenDKIM, Dovecot, the memo's tools): ``PostfixConfig``,
  ``OpenDKIMConfig``, ``DovecotConfig`` and their runners, ``tools``;
- ``labkit.lab``: ``Lab``, ``ServiceInfo``, ``site`` (your own host: profile, rehearsal, bundle,
  doctor);
- ``labkit.teach`` (what chapters show and check): ``display``, ``Table``, ``dnsview``, ``dig``,
  ``tlsview``, ``agents``, ``sasl``, ``breakfix``, ``relaytest``, ``senderauth``, ``exercises``,
  ``check``.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (BindError, ConfigError, ConnectionFailed, DNSLookupError, LabError, LabNotRunning,
                     LabRunningError, LabStateError, MailboxConnectionError, MailboxTLSError, NotFound, NullMXError,
                     ParseError, ProtocolError, RealModeUnavailable, SMTPConnectionError, SMTPTLSError, StartError,
                     TLSFailed)
from .i18n import get_language, set_language
from .result import Result

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers and editors
    from .core import pki, trace, world
    from .core import auth, dns
    from .core.auth import dkim, dmarc, spf
    from .core.auth.dkim import DKIMKey, anatomy, check_key_record
    from .core.auth.dmarc import (aligned, check_dmarc_record, dmarc_record, evaluate_dmarc,
                                  organizational_domain, report_counts)
    from .core.auth.reports import report_xml, verifier_results
    from .core.auth.spf import check_spf_record, evaluate_spf, spf_record
    from .core.dns import addresses, find_zone, mx_hosts, txt_records
    from .lab.lab import Lab, ServiceInfo
    from .net.clients.retrieval import RawIMAP, RawPOP3
    from .net.clients.smtp import RawSMTP, SendResult, auth_plain_string, build_message, send_message
    from .real import tools
    from .real.dovecot import DovecotConfig, DovecotRunner
    from .real.opendkim import OpenDKIMConfig, OpenDKIMRunner, genkey, milter_fields
    from .real.postfix import PostfixConfig, PostfixRunner
    from .teach import agents, breakfix, display, dnsview, exercises, relaytest, sasl, senderauth, tlsview
    from .teach.display import Table, TranscriptView, show
    from .teach.dnsview import dig, nslookup
    from .teach.exercises import check

__version__ = "0.1.0"

#: the modules of the face: name -> where it stands
_MODULES: dict[str, str] = {
    "world": "labkit.core.world", "pki": "labkit.core.pki", "trace": "labkit.core.trace",
    "dns": "labkit.core.dns", "auth": "labkit.core.auth", "spf": "labkit.core.auth.spf",
    "dkim": "labkit.core.auth.dkim", "dmarc": "labkit.core.auth.dmarc", "tools": "labkit.real.tools",
    "display": "labkit.teach.display", "dnsview": "labkit.teach.dnsview", "tlsview": "labkit.teach.tlsview",
    "agents": "labkit.teach.agents", "sasl": "labkit.teach.sasl", "breakfix": "labkit.teach.breakfix",
    "relaytest": "labkit.teach.relaytest", "senderauth": "labkit.teach.senderauth",
    "exercises": "labkit.teach.exercises", "site": "labkit.lab.site",
}
#: the names of the face: name -> the module that defines it
_NAMES: dict[str, str] = {
    "Lab": "labkit.lab.lab", "ServiceInfo": "labkit.lab.lab",
    "DKIMKey": "labkit.core.auth.dkim", "anatomy": "labkit.core.auth.dkim",
    "check_key_record": "labkit.core.auth.dkim",
    **dict.fromkeys(["aligned", "check_dmarc_record", "dmarc_record", "evaluate_dmarc",
                     "organizational_domain", "report_counts"], "labkit.core.auth.dmarc"),
    **dict.fromkeys(["check_spf_record", "evaluate_spf", "spf_record"], "labkit.core.auth.spf"),
    "report_xml": "labkit.core.auth.reports", "verifier_results": "labkit.core.auth.reports",
    **dict.fromkeys(["addresses", "find_zone", "mx_hosts", "txt_records"], "labkit.core.dns"),
    "RawIMAP": "labkit.net.clients.retrieval", "RawPOP3": "labkit.net.clients.retrieval",
    **dict.fromkeys(["RawSMTP", "SendResult", "auth_plain_string", "build_message", "send_message"],
                    "labkit.net.clients.smtp"),
    "DovecotConfig": "labkit.real.dovecot", "DovecotRunner": "labkit.real.dovecot",
    **dict.fromkeys(["OpenDKIMConfig", "OpenDKIMRunner", "genkey", "milter_fields"], "labkit.real.opendkim"),
    "PostfixConfig": "labkit.real.postfix", "PostfixRunner": "labkit.real.postfix",
    "Table": "labkit.teach.display", "TranscriptView": "labkit.teach.display", "show": "labkit.teach.display",
    "dig": "labkit.teach.dnsview", "nslookup": "labkit.teach.dnsview",
    "check": "labkit.teach.exercises",
}

__all__ = ["LabError", "ConfigError", "ParseError", "NotFound", "BindError", "LabStateError", "LabRunningError",
           "LabNotRunning", "RealModeUnavailable", "StartError", "ProtocolError", "DNSLookupError", "NullMXError",
           "ConnectionFailed", "TLSFailed", "SMTPConnectionError", "SMTPTLSError", "MailboxConnectionError",
           "MailboxTLSError", "Result", "set_language", "get_language", "__version__",
           *_MODULES, *_NAMES]


def __getattr__(name: str) -> Any:
    """Load a name of the face on first use (PEP 562), and keep it."""
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    elif name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
    else:
        raise AttributeError(f"module 'labkit' has no attribute {name!r}; the public names are in labkit.__all__")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
