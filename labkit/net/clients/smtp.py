"""A raw SMTP client that records the dialogue: the memo's telnet session, made reproducible.

The memo debugs its setup by typing SMTP by hand::

    $ telnet mail.so-net.ne.jp 587            # or: openssl s_client -starttls smtp -connect ...
    220 ... ESMTP
    EHLO robo.mydns.jp
    250-STARTTLS
    ...

:class:`RawSMTP` does the same over a socket, one line at a time, and writes every line into a
:class:`~labkit.core.transcript.Transcript`, so that a notebook can show it, a test can check it
and nothing depends on how fast someone types::

    with RawSMTP(svc.host, svc.port, server_name="mail.isp.example.net:587") as s:
        s.connect()                                  # S: 220 ...
        s.ehlo("pc.example.com")                     # C: EHLO ...   S: 250-...
        s.starttls(cafile=lab.ca_path)               # C: STARTTLS   S: 220 ...  (TLS from here)
        s.ehlo("pc.example.com")                     # RFC 3207: forget everything, ask again
        s.auth_plain("alice@isp.example.net", "isp-lab-password")   # recorded as AUTH PLAIN ****
        s.mail("alice@isp.example.net"); s.rcpt("bob@inbox.example.org")
        s.data("Subject: hi\\r\\n\\r\\nHello\\r\\n")
        s.quit()
    s.transcript

Every method that sends a command returns the server's :class:`~labkit.core.transcript.Reply`, even
when it is a refusal (``550``, ``535``...): a refusal is an answer, not an error. Exceptions are
kept for what stops the dialogue itself: a connection refused, a timeout, a closed connection,
a failed TLS handshake (:class:`SMTPConnectionError`, :class:`SMTPTLSError`), or a reply that
is not SMTP at all (:class:`~labkit.errors.ProtocolError`). Each carries ``.transcript``: the
dialogue up to the failure.

:func:`send_message` runs the whole dialogue for one message and returns a :class:`SendResult`.
The pure helpers (:func:`auth_plain_string`, :func:`dot_stuff`, :func:`message_lines`,
:func:`parse_ehlo`, :func:`build_message`) need no socket and are tested on their own.
"""
from __future__ import annotations

import base64
import email.utils
import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

from ...core.transcript import SERVER, Reply, Transcript, parse_reply_line
from ...errors import ConfigError, ProtocolError, SMTPConnectionError, SMTPTLSError
from .lineclient import MAX_LINE, LineClient, shown_lines  # noqa: F401 (MAX_LINE: importable here as before)

__all__ = ["RawSMTP", "SendResult", "send_message", "SMTPConnectionError", "SMTPTLSError",
           "auth_plain_string", "auth_login_strings", "dot_stuff", "message_lines", "parse_ehlo",
           "build_message"]


# -- pure helpers ------------------------------------------------------------------------------

def auth_plain_string(user: str, password: str, authzid: str = "") -> str:
    """The argument of ``AUTH PLAIN``: base64 of ``authzid NUL user NUL password`` (RFC 4616).

    This is the string the memo builds by hand (``printf '\\0user\\0password' | base64``)::

        >>> auth_plain_string("tim", "tanstaaftanstaaf")
        'AHRpbQB0YW5zdGFhZnRhbnN0YWFm'

    Base64 only makes the bytes printable: anyone who sees this string knows the password.
    That is why AUTH belongs after STARTTLS, and why the transcript records ``AUTH PLAIN ****``.
    """
    for name, value in (("user", user), ("password", password), ("authzid", authzid)):
        if "\0" in value:
            raise ConfigError(name, "contains a NUL character, which AUTH PLAIN uses as separator")
    raw = f"{authzid}\0{user}\0{password}".encode("utf-8")
    return base64.b64encode(raw).decode("ascii")


def auth_login_strings(user: str, password: str) -> tuple[str, str]:
    """The two answers of ``AUTH LOGIN``: base64 of the user name, then of the password."""
    return (base64.b64encode(user.encode("utf-8")).decode("ascii"),
            base64.b64encode(password.encode("utf-8")).decode("ascii"))


def parse_ehlo(reply: Reply) -> dict[str, str]:
    """The extensions a ``250`` EHLO reply announces: keyword (upper case) -> parameters.

    The first line is the server's greeting; each further line is one extension::

        >>> parse_ehlo(Reply(250, ["mx.example", "SIZE 1000", "AUTH PLAIN LOGIN", "STARTTLS"]))
        {'SIZE': '1000', 'AUTH': 'PLAIN LOGIN', 'STARTTLS': ''}
    """
    if reply.code != 250:
        return {}
    extensions: dict[str, str] = {}
    for text in reply.lines[1:]:
        keyword, _, params = text.strip().partition(" ")
        if keyword:
            extensions[keyword.upper()] = params.strip()
    return extensions


def message_lines(message: bytes | str) -> list[bytes]:
    """Split a message into lines without their endings (CRLF, LF or a lone CR all end a line).

    SMTP carries text as CRLF-terminated lines (RFC 5321 2.3.8), whatever the sender's system
    uses; a final line ending adds no empty line.
    """
    data = message.encode("utf-8") if isinstance(message, str) else bytes(message)
    lines = re.split(rb"\r\n|\r|\n", data)
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def dot_stuff(line: bytes) -> bytes:
    """RFC 5321 4.5.2: a line that starts with ``.`` is sent with one more ``.`` in front.

    A line holding only ``.`` ends the message, so a message line ``.`` must not look like it;
    the receiver removes the extra dot::

        >>> dot_stuff(b".hidden"), dot_stuff(b"."), dot_stuff(b"plain")
        (b'..hidden', b'..', b'plain')
    """
    return b"." + line if line.startswith(b".") else line


def build_message(mail_from: str, rcpt_to: list[str], subject: str | None = None,
                  body: str | None = None, *, date: str | None = None,
                  message_id: str | None = None) -> bytes:
    """A small RFC 5322 message with From, To, Subject, Date and Message-ID.

    The Message-ID uses the sender's domain (``<...@example.com>``), as RFC 5322 3.6.4
    suggests, so that it says who made it.
    """
    domain = mail_from.rpartition("@")[2] or "localhost"
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = ", ".join(rcpt_to)
    msg["Subject"] = subject if subject is not None else "Mail Lab test message"
    msg["Date"] = date or email.utils.formatdate(localtime=True)
    msg["Message-ID"] = message_id or email.utils.make_msgid(domain=domain)
    msg.set_content(body if body is not None else "Hello from Mail Lab.\n")
    return msg.as_bytes(policy=SMTP_POLICY)


def _angle(addr: str) -> str:
    addr = addr.strip()
    return addr if addr.startswith("<") and addr.endswith(">") else f"<{addr}>"


# -- the raw client ----------------------------------------------------------------------------

class RawSMTP(LineClient):
    """One SMTP connection, driven line by line, every line recorded in :attr:`transcript`.

    ``host``/``port`` say where to connect; ``server_name`` is how the transcript names the
    server (default ``host:port``; the lab passes ``mail.isp.example.net:587``) and, without
    ``server_hostname``, the name the TLS certificate must carry. ``source_address`` is the
    local address to connect from (``"127.0.20.100"`` or ``("127.0.20.100", 0)``): the lab
    uses it so that the server sees the PC's address. ``timeout`` bounds every wait in
    seconds. ``implicit_tls=True`` starts TLS before the greeting (port 465, RFC 8314).

    Nothing is sent before :meth:`connect`; the ``with`` block only closes the socket at the
    end (say :meth:`quit` to leave politely). Connecting, TLS and reading and writing lines
    are :class:`~labkit.net.clients.lineclient.LineClient`'s; this class adds SMTP's replies and commands.
    """

    greeting = "the server's 220 greeting"
    cafile_hint = ("Pass cafile= the lab CA (`labkit status --json` gives it as \"ca\") and "
                   "server_hostname= a name the certificate holds")
    crlf_hint = "to send bare bytes on purpose (SMTP smuggling experiments) use send_bytes()"
    not_this_server = "this is not an SMTP server"
    timeout_hint = ("The server may be stalling on purpose (timeout@ addresses do) or waiting for more "
                    "input; raise timeout= to wait longer")
    closed_hint = "Servers hang up on clients they refuse (see the last reply and the lab's events)"
    implicit_tls_hint = "Is this port really implicit TLS (465)? For 25/587 use starttls()"
    tls_yes = "220"
    tls_rfc = "RFC 3207 4.2"

    def __init__(self, host: str, port: int, *, source_address: str | tuple[str, int] | None = None,
                 timeout: float = 10.0, server_name: str | None = None, reveal_secrets: bool = False,
                 implicit_tls: bool = False, cafile: str | None = None,
                 server_hostname: str | None = None, verify: bool = True):
        super().__init__(host, port, source_address=source_address, timeout=timeout,
                         server_name=server_name, reveal_secrets=reveal_secrets,
                         implicit_tls=implicit_tls, cafile=cafile, server_hostname=server_hostname,
                         verify=verify)
        self.transcript = Transcript("client", self.server_name)
        #: the extensions of the last EHLO reply (keyword -> parameters); empty after STARTTLS
        self.extensions: dict[str, str] = {}
        self.banner: Reply | None = None

    @property
    def auth_mechanisms(self) -> list[str]:
        """The SASL mechanisms the last EHLO offered (``["LOGIN", "PLAIN"]``)."""
        return self.extensions.get("AUTH", "").upper().split()

    # -- connecting ------------------------------------------------------------------------
    def connect(self) -> Reply:
        """Open the TCP connection (and TLS, if implicit), then read the server's greeting.

        The greeting is normally ``220 <name> ESMTP``; a server that does not want you says
        ``554`` and closes (RFC 5321 3.1). Returns that reply.
        """
        self._open()
        self.banner = self.read_reply()
        return self.banner

    # -- lines -----------------------------------------------------------------------------
    def _sending(self, line: str) -> None:
        """Note whether this line belongs to an AUTH exchange; after a 334 every line sent is a
        secret until the next reply (read_reply() decides again)."""
        word = line.split(None, 1)[0].upper() if line.strip() else ""
        self._in_auth = word == "AUTH" or self._auth_pending

    def send_line(self, line: str) -> None:
        """Send ``line`` + CRLF and do not wait for a reply.

        For typing the message after ``354`` by hand (end it with a line holding only ``.``;
        dot-stuffing is then up to you), or for pipelining experiments. Read the answer with
        :meth:`read_reply`.
        """
        super().send_line(line)

    def send_bytes(self, data: bytes) -> None:  # type: ignore[override]
        """Send ``data`` exactly as given, no CRLF added (for experiments with bare CR or LF).

        The transcript shows it with ``\\r`` and ``\\n`` made visible.
        """
        self._in_auth = False
        super().send_bytes(data)

    def _read_line(self) -> str:
        return self._read_raw_line().rstrip(b"\r\n").decode("utf-8", "backslashreplace")

    def read_reply(self) -> Reply:
        """Read one reply, however many lines it has (``250-...`` lines then ``250 ...``)."""
        code: int | None = None
        texts: list[str] = []
        while True:
            text = self._read_line()
            self.transcript.add(SERVER, text)
            parsed = parse_reply_line(text)
            if parsed is None:
                raise self._protocol_error(f"{self.where} sent {text!r}, which is not an SMTP reply line "
                                    "(three digits, then '-' or a space). Is this port really SMTP?")
            if code is not None and parsed[0] != code:
                raise self._protocol_error(f"{self.where} changed the code from {code} to {parsed[0]} in the "
                                    "middle of a multi-line reply (RFC 5321 4.2.1 forbids it)")
            code = parsed[0]
            texts.append(parsed[2])
            if not parsed[1]:
                break
        reply = Reply(code, texts)
        self._auth_pending = reply.code == 334 and self._in_auth
        return reply

    def command(self, line: str) -> Reply:
        """Send one line exactly as given (+ CRLF) and return the server's reply.

        Anything goes, including commands the server does not know: ``s.command("HELO")``
        shows what a server says to a malformed command (``501``).
        """
        self.send_line(line)
        return self.read_reply()

    # -- SMTP commands -------------------------------------------------------------------------
    def ehlo(self, name: str) -> Reply:
        """Say EHLO and learn the server's extensions (:attr:`extensions`).

        ``name`` is the client's own host name (an FQDN, RFC 5321 4.1.1.1).
        """
        self.transcript.client_name = name
        reply = self.command(f"EHLO {name}")
        self.extensions = parse_ehlo(reply)
        return reply

    def helo(self, name: str) -> Reply:
        """Say HELO: the old greeting, for servers without ESMTP (no extensions then)."""
        self.transcript.client_name = name
        self.extensions = {}
        return self.command(f"HELO {name}")

    def starttls(self, cafile: str | None = None, server_hostname: str | None = None,
                 verify: bool = True) -> Reply:
        """Ask for TLS (RFC 3207) and, after ``220``, do the handshake on this connection.

        The certificate is checked against ``cafile`` (the lab CA; default: the one given to
        the constructor, else the system's CAs) for ``server_hostname``. ``verify=False``
        encrypts without checking who answers, like ``openssl s_client`` without
        ``-verify_return_error``: fine to look, never to send a password.

        Afterwards the client must say EHLO again: the server forgets the earlier EHLO and
        the client must forget the extensions it learnt in clear (RFC 3207 4.2), which might
        have been forged. So :attr:`extensions` is emptied here.

        A reply other than 220 raises ProtocolError (the connection stays in clear).
        """
        reply = self.command("STARTTLS")
        if reply.code != 220:
            hint = ("the server did not offer STARTTLS in its EHLO reply" if "STARTTLS" not in self.extensions
                    else "see the server's reply")
            raise self._protocol_error(f"{self.where} refused STARTTLS: {reply} ({hint}); the connection is "
                                "still in clear text", reply)
        self._upgrade(cafile, server_hostname, verify)
        self.extensions = {}
        self.transcript.note("the client must say EHLO again now (RFC 3207 4.2)")
        return reply

    def auth_plain(self, user: str, password: str) -> Reply:
        """Log in with ``AUTH PLAIN`` (RFC 4616): one line, recorded as ``AUTH PLAIN ****``."""
        reply = self.command(f"AUTH PLAIN {auth_plain_string(user, password)}")
        if reply.code == 334:  # a server that wants the answer on its own line
            reply = self.command(auth_plain_string(user, password))
        return reply

    def auth_login(self, user: str, password: str) -> Reply:
        """Log in with ``AUTH LOGIN``: the server asks (334) for the user name, then the password.

        Both answers are base64 and both are recorded as ``****``.
        """
        user64, password64 = auth_login_strings(user, password)
        reply = self.command("AUTH LOGIN")
        for answer in (user64, password64):
            if reply.code != 334:
                return reply
            reply = self.command(answer)
        return reply

    def mail(self, addr: str, *params: str) -> Reply:
        """``MAIL FROM:<addr>`` (the envelope sender, where bounces go), with optional params."""
        return self.command(" ".join([f"MAIL FROM:{_angle(addr)}", *params]))

    def rcpt(self, addr: str, *params: str) -> Reply:
        """``RCPT TO:<addr>``: one envelope recipient; the reply says if the server takes it."""
        return self.command(" ".join([f"RCPT TO:{_angle(addr)}", *params]))

    def data(self, message: bytes | str, *, body_lines_shown: int = 10) -> Reply:
        """Send ``DATA``, then the message, then the lone ``.``; return the final reply.

        If DATA is not answered ``354``, that reply is returned and nothing more is sent. The
        message is sent with CRLF line endings and dot-stuffing (:func:`dot_stuff`). The
        transcript shows every header line and the first ``body_lines_shown`` body lines as
        sent; longer bodies are summarised in a note.
        """
        reply = self.command("DATA")
        if reply.code != 354:
            return reply
        lines = [dot_stuff(ln) for ln in message_lines(message)]
        wire = b"".join(ln + b"\r\n" for ln in lines) + b".\r\n"
        recorded, hidden, hidden_bytes = _recorded_message(lines, body_lines_shown)
        self._in_auth = False
        self._send(wire[:-3], recorded)
        if hidden:
            self.transcript.note(f"{hidden} more body lines ({hidden_bytes} bytes) sent, not shown")
        if any(ln.startswith(b"..") for ln in lines):
            self.transcript.note("lines starting with '.' were sent with one more '.' "
                                 "(dot-stuffing, RFC 5321 4.5.2); the server removes it")
        self._send(b".\r\n", ["."])
        return self.read_reply()

    def rset(self) -> Reply:
        """``RSET``: forget the current envelope, keep the connection."""
        return self.command("RSET")

    def quit(self) -> Reply:
        """Say ``QUIT`` (the server answers 221 and closes), then close the socket."""
        return self._say_and_close("QUIT")


def _recorded_message(lines: list[bytes], body_lines_shown: int) -> tuple[list[str], int, int]:
    """What of a message the transcript shows: headers, blank line, the first body lines."""
    shown, hidden, hidden_bytes = shown_lines(lines, body_lines_shown)
    return [ln.decode("utf-8", "backslashreplace") for ln in lines[:shown]], hidden, hidden_bytes


# -- one message, the whole dialogue ------------------------------------------------------------

@dataclass
class SendResult:
    """What happened to one message: ``ok``, the ``reason`` in words, and the evidence.

    ``ok`` is True when the server took the message for every recipient. ``reply`` is the
    reply that decided (the final ``250`` after the message, or the refusal); ``refused``
    maps each refused recipient to its reply. In a notebook it shows as its transcript
    (:func:`labkit.teach.display.send_result_html`, a floor up).
    """

    ok: bool
    reason: str
    transcript: Transcript
    accepted: list[str] = field(default_factory=list)
    refused: dict[str, Reply] = field(default_factory=dict)
    reply: Reply | None = None

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return f"{'sent' if self.ok else 'not sent'}: {self.reason}"


def send_message(host: str, port: int, *, mail_from: str, rcpt_to: list[str],
                 message: bytes | str | None = None, subject: str | None = None, body: str | None = None,
                 helo: str = "pc.example.com", starttls: bool | None = None, implicit_tls: bool = False,
                 auth: tuple[str, str] | None = None, cafile: str | None = None,
                 server_hostname: str | None = None, source_address: str | tuple[str, int] | None = None,
                 timeout: float = 10.0, server_name: str | None = None) -> SendResult:
    """Send one message through the SMTP server at ``host:port``: the whole dialogue.

    greeting -> EHLO -> STARTTLS and EHLO again (``starttls=None``: when offered) -> AUTH
    (PLAIN if offered, else LOGIN) -> MAIL FROM -> RCPT TO for each recipient -> DATA -> QUIT.

    Without ``message``, a small one is built from ``subject`` and ``body``
    (:func:`build_message`). A refusal at any step ends the dialogue and is returned in the
    SendResult with its reply; only a failure of the connection itself (refused, timed out,
    TLS handshake) raises :class:`SMTPConnectionError`, whose ``.transcript`` shows how far
    it got.
    """
    if isinstance(rcpt_to, str):
        rcpt_to = [rcpt_to]
    if message is None:
        message = build_message(mail_from, list(rcpt_to), subject, body)
    name = server_name or f"{server_hostname or host}:{port}"
    with RawSMTP(host, port, source_address=source_address, timeout=timeout, server_name=name,
                 implicit_tls=implicit_tls, cafile=cafile, server_hostname=server_hostname) as s:
        return _dialogue(s, mail_from, list(rcpt_to), message, helo, starttls, auth)


def _dialogue(s: RawSMTP, mail_from: str, rcpt_to: list[str], message: bytes | str, helo: str,
              starttls: bool | None, auth: tuple[str, str] | None) -> SendResult:
    def fail(reason: str, reply: Reply | None, **kw) -> SendResult:
        _quit_quietly(s)
        return SendResult(False, reason, s.transcript, reply=reply, **kw)

    s.transcript.client_name = helo
    banner = s.connect()
    if banner.code != 220:
        return fail(f"{s.where} did not greet: {banner}", banner)
    reply = _greet(s, helo)
    if not reply.ok:
        return fail(f"{s.where} refused the greeting: {reply}", reply)

    if not s.tls:
        offered = "STARTTLS" in s.extensions
        if starttls and not offered:
            return fail(f"{s.where} does not offer STARTTLS and starttls=True asks for it", reply)
        if starttls or (starttls is None and offered):
            try:
                s.starttls()
            except ProtocolError as e:
                return fail(str(e), e.reply)
            reply = _greet(s, helo)
            if not reply.ok:
                return fail(f"{s.where} refused EHLO after STARTTLS: {reply}", reply)

    if auth is not None:
        mechs = s.auth_mechanisms
        if "PLAIN" in mechs:
            reply = s.auth_plain(*auth)
        elif "LOGIN" in mechs:
            reply = s.auth_login(*auth)
        else:
            why = (f"it offers only {', '.join(mechs)}" if mechs else
                   "it offers no AUTH" + ("" if s.tls else " (servers often offer AUTH only after STARTTLS)"))
            return fail(f"cannot log in at {s.where}: {why}", reply)
        if reply.code != 235:
            return fail(f"{s.where} refused the login as {auth[0]}: {reply}", reply)

    reply = s.mail(mail_from)
    if not reply.ok:
        return fail(f"{s.where} refused the sender {mail_from}: {reply}", reply)
    accepted: list[str] = []
    refused: dict[str, Reply] = {}
    for rcpt in rcpt_to:
        r = s.rcpt(rcpt)
        if r.ok:
            accepted.append(rcpt)
        else:
            refused[rcpt] = r
    if not accepted:
        first = next(iter(refused.values()), None)
        summary = "; ".join(f"{a}: {r}" for a, r in refused.items()) or "no recipient given"
        return fail(f"{s.where} refused every recipient ({summary})", first,
                    accepted=accepted, refused=refused)

    reply = s.data(message)
    if not reply.ok:
        return fail(f"{s.where} refused the message: {reply}", reply, accepted=[], refused=refused)
    _quit_quietly(s)
    if refused:
        summary = "; ".join(f"{a}: {r}" for a, r in refused.items())
        return SendResult(False, f"{s.where} took the message for {', '.join(accepted)} but refused "
                                 f"{summary}", s.transcript, accepted, refused, reply)
    return SendResult(True, f"{s.where} accepted the message for {', '.join(accepted)}: {reply}",
                      s.transcript, accepted, refused, reply)


def _greet(s: RawSMTP, helo: str) -> Reply:
    """EHLO, and HELO if the server does not know EHLO (500/502)."""
    reply = s.ehlo(helo)
    if reply.code in (500, 502):
        reply = s.helo(helo)
    return reply


def _quit_quietly(s: RawSMTP) -> None:
    """Say QUIT; if the server has already hung up, note it: the outcome is already known."""
    if not s.connected:
        return
    try:
        s.quit()
    except (SMTPConnectionError, ProtocolError) as e:
        s.close()
        s.transcript.note(f"QUIT got no proper answer ({e.__class__.__name__}); the result stands")
