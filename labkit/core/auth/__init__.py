"""Sender authentication: SPF, DKIM, DMARC, Authentication-Results, and the inbox provider's verdict.

Pure cores over bytes and strings, built on the field's libraries: pyspf (SPF evaluation),
dkimpy with PyNaCl (DKIM, RSA and Ed25519), checkdmarc (record checks), authres/authheaders
(the Authentication-Results header). Every function that looks something up takes the
resolver explicitly (``lab.resolver()``); nothing asks the machine's own DNS or the network.
Every check returns an :class:`AuthResult` (a :class:`labkit.result.Result` with the RFC 8601
result word and a one-sentence reason), never a bare bool, and bad input (a broken record, a
garbled signature, DNS down, a malformed From) is a result, not an exception.

- :mod:`labkit.core.auth.spf` — :func:`spf_record`, :func:`check_spf_record`, :func:`evaluate_spf`
- :mod:`labkit.core.auth.dkim` — :class:`DKIMKey`, :func:`sign`, :func:`verify`, :func:`anatomy`,
  :func:`check_key_record`
- :mod:`labkit.core.auth.dmarc` — :func:`dmarc_record`, :func:`check_dmarc_record`,
  :func:`evaluate_dmarc`, :func:`aligned`, aggregate and failure reports
- :mod:`labkit.core.auth.results` — :class:`AuthResult`, :func:`authentication_results`,
  :func:`parse_authentication_results`
- :mod:`labkit.core.auth.verdict` — :func:`assess` -> :class:`Verdict` (Inbox, Spam or Rejected)

Importing this package does no I/O.
"""
from __future__ import annotations

from .dkim import (
    DKIMKey,
    DKIMResult,
    DKIMSignatureResult,
    anatomy,
    check_key_record,
    key_record,
    sign,
    verify,
)
from .dmarc import (
    DMARCResult,
    ReportRow,
    aggregate_report,
    aligned,
    check_dmarc_record,
    dmarc_record,
    evaluate_dmarc,
    failure_report,
    organizational_domain,
    parse_aggregate_report,
    parse_failure_report,
    report_counts,
    report_svg,
    rows_from_results,
)
from .results import (
    AuthResult,
    authenticate_with_authheaders,
    authentication_results,
    parse_authentication_results,
)
from .spf import SPFResult, check_spf_record, evaluate_spf, spf_record
from .verdict import IPRevResult, Verdict, assess, check_iprev

__all__ = [
    "AuthResult", "authentication_results", "parse_authentication_results", "authenticate_with_authheaders",
    "SPFResult", "spf_record", "check_spf_record", "evaluate_spf",
    "DKIMKey", "DKIMResult", "DKIMSignatureResult", "key_record", "sign", "verify", "anatomy", "check_key_record",
    "DMARCResult", "ReportRow", "dmarc_record", "check_dmarc_record", "evaluate_dmarc", "aligned",
    "organizational_domain", "aggregate_report", "parse_aggregate_report", "rows_from_results", "report_counts",
    "report_svg", "failure_report", "parse_failure_report",
    "Verdict", "IPRevResult", "assess", "check_iprev",
]
