"""Chapter 07 exercises: real Postfix as the ISP's smarthost client.

Checkers read what Postfix and the lab recorded (the maillog, ``postmap -q``, the mailboxes);
none prints, returns or logs the ISP password.
"""
from __future__ import annotations

from pathlib import Path

from ...core.trace import hops
from ...i18n import N_
from ...lab.lab import Lab
from ...real.tools import run
from ...result import Result
from . import arrived, exercise

#: Which side of Postfix each parameter configures: "client" (Postfix sending, to the
#: smarthost: smtp(8)) or "server" (Postfix receiving, from mail programs: smtpd(8)).
SIDES = {
    "smtp_sasl_auth_enable": "client",
    "smtpd_sasl_auth_enable": "server",
    "smtp_tls_security_level": "client",
    "smtpd_tls_security_level": "server",
    "smtp_sasl_password_maps": "client",
    "smtpd_relay_restrictions": "server",
    "relayhost": "client",
    "mynetworks": "server",
}

#: smtp_tls_security_level values with which Postfix sends nothing without TLS.
MANDATORY_TLS = ("encrypt", "verify", "secure", "dane-only", "fingerprint")


@exercise("07.1")
def _sides(lab: Lab | None = None, answer: dict[str, str] | None = None) -> Result:
    """For each parameter of SIDES: "client" or "server"."""
    if not isinstance(answer, dict):
        return Result(False, N_("pass answer= a dict from parameter name to 'client' or 'server', for: ")
                      + ", ".join(SIDES))
    missing = [p for p in SIDES if p not in answer]
    if missing:
        return Result(False, N_('these parameters have no answer yet: {join}').format(join=', '.join(missing)))
    wrong = [p for p, side in SIDES.items() if str(answer[p]).strip().lower() != side]
    if wrong:
        hints = []
        if any(p in ("relayhost", "mynetworks") for p in wrong):
            hints.append("relayhost and mynetworks have no prefix: ask which program uses them (the smtp "
                         "client sends to the relayhost; smtpd's permit_mynetworks trusts mynetworks)")
        return Result(False, N_('{len} wrong: {join}').format(
            len=len(wrong), join=', '.join(wrong)) + (f"; {hints[0]}" if hints else "")
                      + N_(". smtp_ is Postfix as a client, smtpd_ Postfix as a server (the memo's warning)"))
    return Result(True, N_('right: all {len}. smtp_ = Postfix sending (to the smarthost), smtpd_ = Postfix '
                           "receiving (from mail programs); relayhost is the client's, mynetworks the server's").format(
                               len=len(SIDES)))


@exercise("07.2")
def _sasl_passwd_key(lab: Lab | None, answer: str | None = None) -> Result:
    """The key the sasl_passwd line must start with, proved by asking the real map (postmap -q)."""
    if not isinstance(answer, str) or not answer.strip():
        return Result(False, N_("pass answer= the key (the first column of the sasl_passwd line) as a str"))
    cfg = lab.postfix_config if lab is not None else None
    if cfg is None:
        return Result(False, N_('this exercise needs the real-mode lab: Lab(real=True)'))
    key = answer.strip()
    found = run(["postmap", "-c", cfg.config_directory, "-q", key, f"{cfg.map_type}:{cfg.sasl_passwd_path}"])
    if key != cfg.relayhost:
        extra = " (Postfix found an entry for it, but never asks for it)" if found.ok else ""
        hint = ("keep the brackets: Postfix looks the password up by the relayhost string exactly"
                if key.replace("[", "").replace("]", "") == cfg.relayhost.replace("[", "").replace("]", "")
                else "it is the relayhost string, character for character")
        return Result(False, N_('{key!r} is not the relayhost {relayhost!r}{extra}; {hint} (ERRATA 7)').format(
            key=key, relayhost=cfg.relayhost, extra=extra, hint=hint))
    if not found.ok:
        return Result(False, N_('{key!r} is the relayhost, but postmap -q finds no entry under it: '
                                'is the map built?').format(key=key))
    return Result(True, N_('right: {key!r} is the relayhost string, and postmap -q finds the login under it (the '
                           'value is not shown)').format(key=key))


@exercise("07.3")
def _relayed(lab: Lab | None, subject: str = "Exercise 07", address: str = "bob@inbox.example.org",
             timeout: float = 10) -> Result:
    """A message with ``subject`` in bob's mailbox that went PC -> Postfix -> ISP (TLS + AUTH) -> MX,
    and that Postfix logged as sent after a verified TLS handshake."""
    runner = lab.postfix_runner if lab is not None else None
    if runner is None:
        return Result(False, N_("this exercise needs the real-mode lab: Lab(real=True)"))
    msgs = arrived(lab, address, subject, timeout)
    if not msgs:
        return Result(False, N_('{address} holds no message with Subject {subject!r}; send it to Postfix with '
                                "lab.send(..., via='mta', auth=False) and look at lab.postfix_runner.events()").format(
                                    address=address, subject=subject))
    hs = hops(Path(msgs[-1]["path"]).read_bytes())
    mine = [h for h in hs if h.by == lab.postfix.name]
    isp = [h for h in hs if h.by == lab.smarthost.name]
    if not mine:
        return Result(False, N_("that message did not pass through Postfix (mail.example.com); send it via='mta'"))
    if not isp or isp[0].with_.upper() != "ESMTPSA":
        return Result(False, N_('the ISP received it with {value}, not ESMTPSA (TLS and AUTH)').format(
            value=isp[0].with_ if isp else 'nothing'))
    qid = mine[0].id
    events = runner.events()
    sent = [e for e in events if e.kind == "status" and e.queue_id == qid and e.get("status") == "sent"]
    if not sent or not sent[0].get("relay", "").startswith(lab.smarthost.host):
        return Result(False, N_("Postfix's maillog has no status=sent to the ISP for {qid}").format(qid=qid))
    verified = [e for e in events if e.kind == "tls" and e.get("direction") == "to" and e.get("trust") == "verified"
                and e.pid == sent[0].pid]
    if not verified:
        return Result(False, N_('Postfix sent {qid}, but its log shows no verified TLS handshake before it').format(
            qid=qid))
    return Result(True, N_('right: Postfix queued it as {qid}, checked the ISP\'s certificate ("Verified TLS '
                           'connection established"), logged in, and the ISP received it with ESMTPSA; '
                           'status=sent').format(qid=qid),
                  {"queue_id": qid, "hops": [h.by for h in hs]})


@exercise("07.4")
def _require_tls_line(lab: Lab | None = None, answer: str | None = None) -> Result:
    """The lab's Postfix refuses to send to the smarthost without TLS: its main.cf (as ``postconf``
    reads it) holds a level that requires TLS, and the running Postfix acts on it (the checker
    strips STARTTLS at the ISP and sends one probe, as 08.3 does). ``answer``, the learner's
    ``postconf -e`` line, only helps the reason: the line counts once it was run on the lab."""
    from ...real.tools import run
    from .ch08 import _tls_required

    runner = getattr(lab, "postfix_runner", None)
    if lab is None or runner is None or lab.postfix_config is None:
        return Result(False, "this exercise needs the running real-mode lab: check('07.4', lab)")
    folder = lab.postfix_config.config_directory
    how = (f"run your line on the lab's Postfix: tools.run(['postconf', '-c', {folder!r}, '-e', 'name = value']), "
           "then lab.postfix_runner.reload()")
    said = {}
    for name in ("smtp_tls_security_level", "smtpd_tls_security_level"):
        got = run(["postconf", "-c", folder, "-h", name])
        if not got.ok:
            return Result(False, f"postconf could not read {name} in {folder}: {got.reason}")
        said[name] = got.stdout.strip()
    value = said["smtp_tls_security_level"]
    if value not in MANDATORY_TLS:
        if said["smtpd_tls_security_level"] in MANDATORY_TLS:
            return Result(False, "smtpd_tls_security_level is Postfix as a server (clients sending to it); the "
                          "smarthost is reached by Postfix as a client: smtp_ (the memo's warning about smtp_ and "
                          "smtpd_)")
        given = f" ({answer!r} has not reached it)" if isinstance(answer, str) and answer.strip() else ""
        return Result(False, f"the lab's Postfix has smtp_tls_security_level = {value or '(empty)'}{given}: with it "
                      f"Postfix still sends (and logs in) in clear when STARTTLS is missing. Choose a level that "
                      f"requires TLS (postconf(5), TLS_README) and {how}")
    probe = _tls_required(lab)
    if not probe.ok:
        return Result(False, f"main.cf says smtp_tls_security_level = {value}, but the running Postfix did not act "
                      f"on it ({probe.reason}); did you reload? lab.postfix_runner.reload()")
    return Result(True, f"right: smtp_tls_security_level = {value} in the lab's main.cf; with STARTTLS stripped "
                  "Postfix deferred the probe and sent no AUTH" +
                  (", and it checks the certificate too" if value in ("verify", "secure") else ""),
                  {"level": value, **probe.details})
