"""Chapter 12 exercises: DMARC records, alignment, policies and reports in the lab."""
from __future__ import annotations

from typing import Any

from ...core.auth.dmarc import aligned, check_dmarc_record, parse_dmarc_tags
from ...i18n import N_
from ...lab.lab import Lab
from ...result import Result
from ..senderauth import aggregate_reports_received
from . import exercise

#: (From domain, the SPF or DKIM domain, mode): is it aligned? (RFC 7489 §3.1)
PAIRS = (
    ("example.com", "example.com", "s"),
    ("example.com", "mail.example.com", "r"),
    ("example.com", "mail.example.com", "s"),
    ("news.example.com", "example.com", "r"),
    ("example.com", "isp.example.net", "r"),
    ("example.com", "example.org", "r"),
)


@exercise("12.1")
def _record(lab: Lab | None) -> Result:
    """A valid DMARC record at _dmarc.example.com that quarantines or rejects and reports to dmarc@example.com."""
    if lab is None or not lab.running:
        return Result(False, N_("pass the running lab: check('12.1', lab)"))
    checked = check_dmarc_record("example.com", lab.resolver())
    if checked.result == "none":
        return Result(False, N_('no DMARC record at _dmarc.example.com yet'))
    if not checked.ok:
        return Result(False, N_('the record is not usable: {reason}').format(reason=checked.reason))
    tags = parse_dmarc_tags(checked.details.get("record") or "")
    if tags.get("p") not in ("quarantine", "reject"):
        return Result(False, N_('p={get} only monitors; the memo asks for quarantine').format(get=tags.get('p')))
    rua = [u.strip().lower() for u in tags.get("rua", "").split(",")]
    if "mailto:dmarc@example.com" not in rua:
        return Result(False, N_("aggregate reports go to rua=mailto:dmarc@example.com (the memo's dmarc: root alias)"))
    return Result(True, N_('right: {reason}; reports to dmarc@example.com').format(reason=checked.reason))


@exercise("12.2")
def _alignment(lab: Lab | None = None, answer: Any = None) -> Result:
    """For each of PAIRS, True (aligned) or False."""
    if not isinstance(answer, (list, tuple)) or len(answer) != len(PAIRS) or \
            not all(isinstance(a, bool) for a in answer):
        return Result(False, N_('pass answer= a list of {len} True/False, one per pair of PAIRS').format(
            len=len(PAIRS)))
    truth = [aligned(f, o, m) for f, o, m in PAIRS]
    wrong = [i for i, (a, t) in enumerate(zip(answer, truth)) if a != t]
    if wrong:
        i = wrong[0]
        f, o, m = PAIRS[i]
        hint = ("strict needs the very same name" if m == "s" else
                "relaxed needs the same organizational domain (the registered name, e.g. example.com)")
        return Result(False, N_('{len} wrong, the first is pair {i}: From {f} with {o} ({m}); {hint}').format(
            len=len(wrong), i=i, f=f, o=o, m=m, hint=hint))
    return Result(True, N_('right: all {len}').format(len=len(PAIRS)))


@exercise("12.3")
def _failed_in_reports(lab: Lab | None, answer: int | None = None, address: str = "dmarc@example.com") -> Result:
    """How many messages the aggregate reports received at ``address`` count as failing DMARC."""
    if lab is None or isinstance(answer, bool) or not isinstance(answer, int):
        return Result(False, N_('pass the lab and answer= a whole number'))
    reports = aggregate_reports_received(lab, address)
    if not reports:
        return Result(False, N_('{address} holds no aggregate report yet: lab.send_dmarc_reports()').format(
            address=address))
    failed = sum(r.count for rep in reports for r in rep["rows"] if "pass" not in (r.dkim, r.spf))
    if answer != failed:
        return Result(False, N_('{answer} is not it: a row fails DMARC when neither its dkim nor its spf (under '
                                'policy_evaluated) is pass; add up the count of those rows over every report').format(
                                    answer=answer))
    return Result(True, N_('right: {failed} message(s) failed DMARC in {len} report(s)').format(
        failed=failed, len=len(reports)))


@exercise("12.4")
def _rejected(lab: Lab | None, subject: str = "Exercise 12.4") -> Result:
    """The message with ``subject``, claiming to be from example.com, that the provider refused during
    SMTP because it failed DMARC under the p=reject published at _dmarc.example.com now."""
    from ...core.auth.dmarc import check_dmarc_record, parse_dmarc_tags

    if lab is None or not lab.running:
        return Result(False, "pass the running lab: check('12.4', lab)")
    from_us = [e for e in lab.events.select("assessed", role="inbox")
               if "header.from=example.com" in e.get("authentication_results", "") and e.get("subject") == subject]
    refused = [e for e in from_us if e.get("folder") == "Rejected" and e.get("dmarc") == "fail"]
    if not refused:
        went = ", ".join(str(e.get("folder")) for e in from_us)
        return Result(False, f"no message from example.com with Subject {subject!r} was refused yet" +
                      (f" (it went to: {went})" if went else "") +
                      f": publish p=reject, then send a message with Subject {subject!r} that fails DMARC")
    checked = check_dmarc_record("example.com", lab.resolver())
    policy = parse_dmarc_tags(checked.details.get("record") or "").get("p") if checked.ok else None
    if policy != "reject":
        return Result(False, f"the message was refused, but _dmarc.example.com now says p={policy}: the refusal "
                      "must come from the record that is published")
    return Result(True, f"right: the provider answered 550 during SMTP: {refused[-1]['reasons'][0]}")
