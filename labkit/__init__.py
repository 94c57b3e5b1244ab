"""labkit: the helper package of Mail Lab.

    from labkit import Lab
    with Lab() as lab:
        result = lab.send("alice@example.com", "bob@inbox.example.org", subject="Hello")
        lab.wait_for_mail("bob@inbox.example.org")

Modules: ``world`` (the lab's hosts and accounts), ``pki`` (keys, CSR, CA), ``dns`` (zones,
server, resolver), ``smtp`` (server roles, client, Maildir, queue), ``retrieval`` (POP3 and
IMAP servers and clients), ``postfix`` and ``opendkim`` (the real daemons: configuration,
runners, logs), ``auth`` (SPF, DKIM, DMARC, the provider's verdict), ``provider`` (DMARC
reports, the verifier's answer), ``display`` (transcripts and diagrams), ``trace`` (Received
lines), ``agents``, ``dnsview``, ``tlsview``, ``sasl``, ``breakfix``, ``relaytest`` and
``senderauth`` (what the chapters show), ``site`` (your own host: profile, rehearsal, bundle,
doctor), ``exercises`` (the checkers), ``tools`` (the memo's
command-line tools), ``cli`` (the ``labkit`` command). Importing labkit does no I/O.
"""
from .errors import (BindError, ConfigError, LabError, LabNotRunning, LabRunningError, LabStateError,
                     ProtocolError, RealModeUnavailable, StartError)
from .lab import Lab, ServiceInfo
from .result import Result

__version__ = "0.1.0"

__all__ = ["Lab", "ServiceInfo", "Result", "LabError", "ConfigError", "BindError", "LabStateError",
           "LabRunningError", "LabNotRunning", "RealModeUnavailable", "StartError", "ProtocolError",
           "__version__"]
