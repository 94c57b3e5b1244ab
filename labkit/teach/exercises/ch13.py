"""Chapter 13 exercises: the whole chain, Postfix with OpenDKIM -> ISP -> the provider and the verifier."""
from __future__ import annotations

from pathlib import Path

from ...core.auth.reports import verifier_results
from ...i18n import N_
from ...lab.lab import Lab
from ...result import Result
from ..senderauth import journey
from . import exercise

#: Where the provider files a message from example.com (published: SPF with the ISP, a DKIM key,
#: DMARC p=quarantine unless the scenario says otherwise) when...
PREDICTIONS = {
    "spf broken": "Inbox",
    "dkim broken": "Inbox",
    "both broken": "Spam",
    "both broken, p=reject": "Rejected",
    "both broken, p=none": "Spam",
}
_WHY = {
    "spf broken": "DKIM still passes for d=example.com, aligned with From: DMARC passes with one of the two",
    "dkim broken": "SPF still passes for example.com, aligned with From: DMARC passes with one of the two",
    "both broken": "DMARC fails and p=quarantine asks for the Spam folder",
    "both broken, p=reject": "DMARC fails and p=reject asks the provider to refuse it (550)",
    "both broken, p=none": "p=none does not move it, but neither SPF nor DKIM passed, which the provider "
                           "requires on its own",
}


@exercise("13.1")
def _inbox(lab: Lab | None, subject: str = "Exercise 13", address: str = "bob@inbox.example.org") -> Result:
    """The message with ``subject`` went through Postfix, was signed by OpenDKIM, passed every check, and is in the Inbox."""
    if lab is None or lab.postfix_runner is None:
        return Result(False, N_("this exercise needs the real-mode lab: Lab(real=True)"))
    try:
        j = journey(lab, subject, address, timeout=10)
    except TimeoutError as exc:
        return Result(False, str(exc))
    if not any(h.by == lab.world.host("home").name for h in j.hops):
        return Result(False, N_('that message did not pass through Postfix (mail.example.com): send it with '
                                "lab.send(..., via='mta', auth=False)"))
    if not j.opendkim:
        return Result(False, N_("OpenDKIM logged no signature for it: is the milter in Postfix's configuration?"))
    bad = [f"{m} {j.result(m)}" for m in ("spf", "dkim", "dmarc") if j.result(m) != "pass"]
    if bad:
        return Result(False, N_('the provider found {join}: ').format(
            join=', '.join(bad)) + "; ".join(j.checks[m.split()[0]].reason
                                                                                   for m in bad if m.split()[0] in j.checks))
    if not j.ok:
        return Result(False, N_('it is in {folder}: {value}').format(
            folder=j.folder, value=j.reasons[0] if j.reasons else ''))
    return Result(True, N_('right: signed by OpenDKIM ({opendkim}), SPF, DKIM and '
                           'DMARC pass, filed in the Inbox').format(opendkim=j.opendkim),
                  {"queue_id": j.queue_id})


@exercise("13.2")
def _verifier(lab: Lab | None, answer: dict[str, str] | None = None, subject: str = "Exercise 13.2",
              address: str = "alice@example.com") -> Result:
    """The SPF, DKIM and DMARC results of the verifier's report on the message with ``subject``
    (sent through Postfix to check-auth@verifier.example.org), as read by the learner."""
    if lab is None:
        return Result(False, "pass the lab: check('13.2', lab, answer={...})")
    want = f"Authentication Report: {subject}"
    reports = [m for m in lab.mailbox(address) if str(m.get("subject", "")) == want]
    if not reports:
        return Result(False, f"{address} holds no report {want!r}: send a message with Subject {subject!r} to "
                      "check-auth@verifier.example.org through Postfix first, and wait for the answer")
    if not isinstance(answer, dict) or not answer:
        return Result(False, "pass answer= a dict like {'spf': ..., 'dkim': ..., 'dmarc': ...}, read from "
                      "the report's Summary of Results")
    said = verifier_results(Path(reports[-1]["path"]).read_text(errors="replace"))
    wrong = [m for m in ("spf", "dkim", "dmarc") if str(answer.get(m, "")).strip().lower() != said.get(m)]
    if wrong:
        return Result(False, N_('not what the report says for {join}: read its Summary of Results').format(
            join=', '.join(wrong)))
    return Result(True, N_('right: ') + ", ".join(f"{m.upper()} {said[m]}" for m in ("spf", "dkim", "dmarc")))


@exercise("13.3")
def _predict(lab: Lab | None = None, answer: dict[str, str] | None = None) -> Result:
    """For each scenario of PREDICTIONS: "Inbox", "Spam" or "Rejected"."""
    if not isinstance(answer, dict):
        return Result(False, N_('pass answer= a dict from each scenario of PREDICTIONS to Inbox, Spam or Rejected'))
    missing = [k for k in PREDICTIONS if k not in answer]
    if missing:
        return Result(False, N_('no answer yet for: {join}').format(join=', '.join(missing)))
    wrong = [k for k, v in PREDICTIONS.items() if str(answer[k]).strip().lower() != v.lower()]
    if wrong:
        return Result(False, N_('{len} wrong; the first, {wrong!r}: think again about what DMARC needs (one aligned '
                                'pass) and what the provider needs on its own (SPF or DKIM)').format(
                                    len=len(wrong), wrong=wrong[0]))
    return Result(True, N_('right: ') + "; ".join(f"{k}: {v} ({_WHY[k]})" for k, v in PREDICTIONS.items()))
