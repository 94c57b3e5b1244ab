"""Chapter 10 exercises: SPF, checked against the lab DNS with pyspf and checkdmarc."""
from __future__ import annotations

from ...core.auth.spf import check_spf_record, evaluate_spf
from ...i18n import N_
from ...lab.lab import Lab
from ...result import Result
from . import exercise

#: A host that is not yours: the verifier's address, which example.com's record must not allow.
STRANGER = "127.0.50.25"


@exercise("10.1")
def _record_allows_the_isp(lab: Lab | None, subject: str = "Exercise 10.1") -> Result:
    """The SPF record published at example.com lets the ISP's smarthost send, and no stranger; and
    the message with ``subject``, sent from alice@example.com through the ISP, passed SPF at the provider."""
    from ...core.auth.spf import check_spf_record, evaluate_spf

    if lab is None or not lab.running:
        return Result(False, N_("pass the running lab: check('10.1', lab)"))
    resolver = lab.resolver()
    record = check_spf_record("example.com", resolver)
    if record.result == "none":
        return Result(False, N_('example.com publishes no SPF record yet; publish one at example.com itself (not at '
                                '_spf.example.com: erratum 6)'))
    if not record.ok:
        return Result(False, N_('the record is not usable: {reason}').format(reason=record.reason))
    isp = lab.world.host("isp")
    ours = evaluate_spf(isp.address, "alice@example.com", isp.name, resolver=resolver)
    if not ours.ok:
        return Result(False, N_("mail from example.com leaves through the ISP's smarthost {address}, and SPF says "
                                "{result} for it: {reason}. Include the ISP's record (include:isp.example.net), as the "
                                "memo's +a:mail.so-net.ne.jp does").format(
                                    address=isp.address, result=ours.result, reason=ours.reason))
    stranger = evaluate_spf(STRANGER, "alice@example.com", "verifier.example.org", resolver=resolver)
    if stranger.result not in ("fail", "softfail"):
        return Result(False, f"a host that is not yours ({STRANGER}) gets {stranger.result}: end the record with "
                      "-all (fail) or ~all (softfail), and never +all")
    seen = [e for e in lab.events.select("assessed", role="inbox") if e.get("subject") == subject]
    if not seen:
        return Result(False, f"the record is right; now send alice@example.com's message with Subject {subject!r} "
                      "to bob@inbox.example.org through the ISP (lab.send(...)), so the provider checks it")
    if seen[-1].get("spf") != "pass":
        return Result(False, f"the provider found SPF {seen[-1].get('spf')} for {subject!r}: "
                      f"{'; '.join(seen[-1].get('reasons', [])) or 'send it again through the ISP'}")
    return Result(True, f"right: {isp.address} passes ({ours.details.get('mechanism')}), and {STRANGER} gets "
                  f"{stranger.result}; the record uses {record.details.get('dns_lookups')} of 10 DNS lookups; "
                  f"the provider found SPF pass for {subject!r}", {"record": record.details.get("record")})


@exercise("10.2")
def _where_spf_is_looked_up(lab: Lab | None = None, answer: str | None = None) -> Result:
    """The name a receiver asks for TXT to check MAIL FROM:<alice@example.com>."""
    if not isinstance(answer, str) or not answer.strip():
        return Result(False, N_('pass answer= the DNS name as a str'))
    name = answer.strip().rstrip(".").lower()
    if name == "example.com":
        return Result(True, N_('right: SPF reads the TXT record at the MAIL FROM domain itself (RFC 7208 §4.1); '
                               '_spf.example.com counts only when that record includes it'))
    if name.startswith("_spf."):
        return Result(False, N_('that is where the memo publishes it (erratum 6), but no receiver asks there on its '
                                'own: SPF starts at the MAIL FROM domain (RFC 7208 §4.1)'))
    return Result(False, N_('{name!r} is not it: which domain is in MAIL FROM:<alice@example.com>?').format(name=name))


@exercise("10.3")
def _lookups(lab: Lab | None, answer: int | None = None) -> Result:
    """How many of the 10 DNS-querying terms the record at example.com uses."""
    if lab is None or not lab.running:
        return Result(False, N_("pass the running lab: check('10.3', lab, answer=N)"))
    if isinstance(answer, bool) or not isinstance(answer, int):
        return Result(False, N_('pass answer= a whole number'))
    record = check_spf_record("example.com", lab.resolver())
    if record.result == "none":
        return Result(False, N_('example.com publishes no SPF record to count; publish one first'))
    used = record.details.get("dns_lookups")
    if used is None:
        return Result(False, N_('the record could not be counted: {reason}').format(reason=record.reason))
    if answer != used:
        return Result(False, N_('{answer} is not it. Count include, a, mx, ptr, exists and redirect, and what the '
                                'records they include count in turn; ip4:, ip6: and all cost nothing').format(
                                    answer=answer))
    return Result(True, N_('right: {used} of 10 (RFC 7208 §4.6.4); checkdmarc counts the same').format(used=used),
                  {"record": record.details.get("record")})
