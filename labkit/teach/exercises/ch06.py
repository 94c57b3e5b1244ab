"""Chapter 06 exercises: reading mail over POP3 and IMAP, and what each leaves on the server.

The checkers look at alice's Maildir (``SANDBOX/mail/example.com/alice``: ``new/``, ``cur/`` and
the server's ``labkit-uidlist``) and at the lab's events, never at printed text. None of them
prints, returns or logs a password.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...i18n import N_
from ...lab.lab import Lab
from ...net.clients.retrieval import RawIMAP, RawPOP3
from ...net.mailbox.store import UIDLIST, split_name
from ...result import Result
from . import exercise

ALICE = "alice@example.com"
IMAP_ROLES = ("imap", "imaps")
POP3_ROLES = ("pop3", "pop3s")


def _folder(lab: Lab, address: str = ALICE) -> Path:
    return lab.ctx.mailbox_dir(address)


def _files(folder: Path) -> dict[str, Path]:
    """Every message file of a Maildir: file name -> path (``new/`` and ``cur/``)."""
    out: dict[str, Path] = {}
    for sub in ("new", "cur"):
        d = folder / sub
        if d.is_dir():
            out.update({p.name: p for p in sorted(d.iterdir()) if not p.name.startswith(".")})
    return out


def _key_flags(name: str) -> tuple[str, str]:
    return split_name(name)


def _uidlist(folder: Path) -> tuple[int, dict[str, int]]:
    """The server's ``labkit-uidlist``: (UIDVALIDITY, {Maildir key: UID}); (0, {}) if none yet.

    Read as it is on disk, without changing it (the servers write it when they look).
    """
    try:
        lines = (folder / UIDLIST).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return 0, {}
    validity = 0
    for word in (lines[0].split()[2:] if lines else []):
        if word[:1] == "V" and word[1:].isdigit():
            validity = int(word[1:])
    uids = {}
    for line in lines[1:]:
        uid, _, key = line.partition(" ")
        if uid.isdigit() and key:
            uids[key] = int(uid)
    return validity, uids


def _by_subject(lab: Lab, subject: str, address: str = ALICE) -> list[dict[str, Any]]:
    return lab.mailbox(address, subject)


def _touched(lab: Lab, uid: int, roles: tuple[str, ...], kinds: tuple[str, ...], user: str = ALICE) -> list[Any]:
    return [e for e in lab.events if e.role in roles and e.kind in kinds and e.get("user") == user
            and uid in (e.get("uids") or ([e.get("uid")] if e.get("uid") is not None else []))]


@exercise("06.1")
def _seen_over_imap(lab: Lab, file_name: Any = None) -> Result:
    """Read one of alice's messages over IMAP, then give the name its file has now in her
    Maildir: ``cur/KEY:2,S`` (S for \\Seen). The checker finds the file, checks the S and that
    an IMAP session (not POP3) read or flagged that message."""
    if not isinstance(file_name, (str, Path)) or not str(file_name).strip():
        return Result(False, N_("pass file_name= the name of the message's file in alice's Maildir (look in its cur/ "
                                'folder: KEY:2,FLAGS)'))
    name = Path(str(file_name).strip()).name
    folder = _folder(lab)
    files = _files(folder)
    if name not in files:
        key = _key_flags(name)[0]
        now = [n for n in files if _key_flags(n)[0] == key]
        if now:
            return Result(False, N_("{name} is not there any more: that message's file is now {now} (flags change the "
                                    "name)").format(name=name, now=now[0]))
        return Result(False, N_("alice's Maildir holds no file {name}; its files are: {value}").format(
            name=name, value=', '.join(files) or 'none'))
    path = files[name]
    key, flags = _key_flags(name)
    if path.parent.name == "new":
        return Result(False, N_('{name} is still in new/: no mail program has taken it yet. Read it over IMAP (FETCH '
                                'BODY[] or STORE +FLAGS (\\Seen)) and look again').format(name=name))
    if "S" not in flags:
        return Result(False, N_("{name} has no S after ':2,' ({value}): it is not \\Seen yet. BODY.PEEK[] reads "
                                'without marking; FETCH BODY[] marks it').format(name=name, value=flags or 'no flags'))
    _, uids = _uidlist(folder)
    uid = uids.get(key)
    if uid is None:
        return Result(False, N_("{key} has no UID in the server's labkit-uidlist: no session has seen it yet").format(
            key=key))
    by_imap = _touched(lab, uid, IMAP_ROLES, ("fetch", "store"))
    if not by_imap:
        by_pop3 = _touched(lab, uid, POP3_ROLES, ("retrieve",))
        why = (" It got its S from POP3: RETR marks a message read when the session QUITs."
               if by_pop3 else "")
        return Result(False, N_('no IMAP session has fetched or flagged UID {uid}.{why} Read it over IMAP').format(
            uid=uid, why=why))
    return Result(True, N_("right: {name}/{name2} is message UID {uid}; the S after ':2,' is IMAP's \\Seen, set "
                           'by an IMAP {kind} (the file stayed on the server)').format(
                               name=path.parent.name, name2=name, uid=uid, kind=by_imap[-1].kind),
                  {"uid": uid, "flags": flags})


@exercise("06.2")
def _uid_is_stable(lab: Lab, subject: Any = None, uids: Any = None, uidvalidity: Any = None) -> Result:
    """The UID of one message (by Subject), as two IMAP sessions saw it, and the UIDVALIDITY.
    The checker compares them with each other and with the server's ``labkit-uidlist``."""
    if not isinstance(subject, str):
        return Result(False, N_('pass subject= the Subject of the message, uids= the UIDs two sessions gave it, and '
                                'uidvalidity= the UIDVALIDITY that SELECT announced'))
    try:
        seen = [int(u) for u in uids]
    except (TypeError, ValueError):
        return Result(False, N_('uids={uids!r} should be a list of numbers, one per session, e.g. [3, 3]').format(
            uids=uids))
    if len(seen) < 2:
        return Result(False, N_('give the UID from two sessions (log out and in again in between)'))
    msgs = _by_subject(lab, subject)
    if not msgs:
        return Result(False, N_("alice's mailbox holds no message with Subject {subject!r}").format(subject=subject))
    key = _key_flags(Path(msgs[-1]["path"]).name)[0]
    validity, listed = _uidlist(_folder(lab))
    uid = listed.get(key)
    if uid is None:
        return Result(False, N_('the server has not given that message a UID yet: open the mailbox over IMAP'))
    if len(set(seen)) != 1:
        return Result(False, N_('the sessions gave different UIDs {seen}: were they the same message? (UID FETCH ... '
                                'or SEARCH SUBJECT finds it)').format(seen=seen))
    if seen[0] != uid:
        return Result(False, N_("the server's uidlist gives that message UID {uid}, not {seen} (a message number, from "
                                'SEARCH without UID, is not a UID)').format(uid=uid, seen=seen[0]))
    if uidvalidity is not None:
        try:
            given_validity = int(uidvalidity)
        except (TypeError, ValueError):
            return Result(False, N_('uidvalidity={uidvalidity!r} is not a number').format(uidvalidity=uidvalidity))
        if given_validity != validity:
            return Result(False, N_("UIDVALIDITY is {validity} in the server's uidlist, not {given_validity}").format(
                validity=validity, given_validity=given_validity))
    logins = [e for e in lab.events.select("auth") if e.role in IMAP_ROLES and e.get("success")
              and e.get("user") == ALICE]
    if len(logins) < 2:
        return Result(False, N_('{len} IMAP login(s) for alice so far: the point is two sessions').format(
            len=len(logins)))
    return Result(True, N_("right: UID {uid} in every session, as in the server's labkit-uidlist (UIDVALIDITY "
                           '{validity}); together they name this message for good (RFC 3501 2.3.1.1)').format(
                               uid=uid, validity=validity),
                  {"uid": uid, "uidvalidity": validity})


@exercise("06.3")
def _deleted_over_pop3(lab: Lab, uidl: Any = None) -> Result:
    """Delete one of alice's messages over POP3 (DELE, then QUIT), and give its UIDL
    (``UIDVALIDITY.UID``, as UIDL listed it). The checker looks for its file in the Maildir."""
    text = str(uidl).strip() if uidl is not None else ""
    validity_text, _, uid_text = text.partition(".")
    if not (validity_text.isdigit() and uid_text.isdigit()):
        return Result(False, N_("pass uidl= the unique id UIDL gave the message, e.g. '1718000000.3'"))
    uid = int(uid_text)
    folder = _folder(lab)
    validity, listed = _uidlist(folder)
    if validity and int(validity_text) != validity:
        return Result(False, N_('{text} is from another mailbox (its UIDVALIDITY is {validity})').format(
            text=text, validity=validity))
    keys = [k for k, u in listed.items() if u == uid]
    still = [n for n in _files(folder) if _key_flags(n)[0] in keys]
    if still:
        return Result(False, N_('that message is still on the server ({still}). DELE only marks it; the server deletes '
                                'at QUIT (RFC 1939 6), and a dropped connection deletes nothing').format(
                                    still=still[0]))
    pop3 = _touched(lab, uid, POP3_ROLES, ("delete",))
    if not pop3:
        imap = _touched(lab, uid, IMAP_ROLES, ("delete",))
        if imap:
            return Result(False, N_("UID {uid} was expunged over IMAP; this exercise asks for "
                                    "POP3's DELE and QUIT").format(uid=uid))
        return Result(False, N_('no POP3 session of alice deleted UID {uid} (is {text} the UIDL of a message you '
                                'deleted?)').format(uid=uid, text=text))
    return Result(True, N_('right: {text} was deleted at QUIT by a POP3 session, and no file of it is left in '
                           "new/ or cur/: POP3's download-and-delete").format(text=text), {"uid": uid})


def _code_of(answer: str) -> tuple[str, str]:
    """``"-ERR [AUTH]"`` -> ("-ERR", "AUTH"); ``"[AUTHENTICATIONFAILED]"`` -> ("", "AUTHENTICATIONFAILED")."""
    text = answer.strip()
    status = ""
    for s in ("-ERR", "+OK", "NO", "BAD", "OK"):
        if text.upper().startswith(s) and (len(text) == len(s) or text[len(s)] in " ["):
            status, text = s, text[len(s):].strip()
            break
    if text.startswith("[") and "]" in text:
        text = text[1:text.index("]")]
    return status, text.strip("[] ").upper()


def _measure_wrong_password(lab: Lab) -> tuple[str, str]:
    """(POP3 answer, IMAP tagged answer) to alice's login with a wrong password, over TLS."""
    wrong = "not-alices-password"  # a made-up password: nothing secret
    svc = lab.pop3s
    with RawPOP3(svc.host, svc.port, implicit_tls=True, cafile=lab.ca_path, server_hostname=svc.name) as p:
        p.connect()
        pop3 = p.login(ALICE, wrong).first_line
        p.quit()
    svc = lab.imaps
    with RawIMAP(svc.host, svc.port, implicit_tls=True, cafile=lab.ca_path, server_hostname=svc.name) as m:
        m.connect()
        imap = m.login(ALICE, wrong)
        m.logout()
    return pop3, f"{imap.status} [{imap.code}]" if imap.code else imap.status


@exercise("06.4")
def _wrong_password(lab: Lab, pop3: Any = None, imap: Any = None) -> Result:
    """The response code in brackets that each server gives to a wrong password: POP3 (RFC 2449,
    RFC 3206) and IMAP (RFC 5530). The checker logs in with a wrong password itself and compares."""
    if not isinstance(pop3, str) or not isinstance(imap, str):
        return Result(False, N_('pass pop3= and imap= the response codes (the word in brackets) each server answers to '
                                "a wrong password, e.g. pop3='[SOMETHING]'"))
    pop3_line, imap_line = _measure_wrong_password(lab)
    want_pop3, want_imap = _code_of(pop3_line), _code_of(imap_line)
    got_pop3, got_imap = _code_of(pop3), _code_of(imap)
    wrong = []
    for proto, got, want in (("POP3", got_pop3, want_pop3), ("IMAP", got_imap, want_imap)):
        if got[1] != want[1]:
            if got[1] == "" and got[0] == want[0]:
                wrong.append(f"{proto}: yes, {want[0]}; but which response code in brackets follows it?")
            else:
                wrong.append(f"{proto}: {got[0] + ' ' if got[0] else ''}[{got[1]}] is not what the server "
                             "says; log in with a wrong password and read the answer")
    if wrong:
        return Result(False, "; ".join(wrong))
    return Result(True, N_("right: POP3 answers '{want_pop3} [{want_pop32}]' (RFC 3206: the credentials were "
                           "wrong, not a passing fault such as [SYS/TEMP]) and IMAP '{want_imap} [{want_imap2}]' "
                           '(RFC 5530); a mail program uses the code to ask for the password again').format(
                               want_pop3=want_pop3[0], want_pop32=want_pop3[1], want_imap=want_imap[0],
                               want_imap2=want_imap[1]),
                  {"pop3": pop3_line, "imap": imap_line})
