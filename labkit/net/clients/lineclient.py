"""What the raw SMTP, POP3 and IMAP clients share: one TCP connection, spoken a line at a time.

SMTP, POP3 and IMAP are all line protocols over TCP: the client sends a line ending in CRLF,
the server answers with lines, and either side may switch the connection to TLS (at once on
465/995/993, or after STARTTLS/STLS on 25/587/110/143). :class:`LineClient` holds that
machinery, and records each step in the client's transcript:

- connecting, from ``source_address`` if given, with ``timeout``; an error names
  ``host:port`` and says what to try next;
- TLS, implicit or after the server's yes, with a note of the version, the cipher and the
  certificate (subject, issuer, verified or not) in :attr:`~LineClient.tls_info`;
- sending a line, and recording it with its secrets replaced by ``****``;
- reading lines of at most :data:`MAX_LINE` bytes, or exactly ``n`` octets;
- :meth:`~LineClient.close` and the ``with`` block.

:class:`~labkit.net.clients.smtp.RawSMTP`, :class:`~labkit.net.clients.retrieval.RawPOP3` and
:class:`~labkit.net.clients.retrieval.RawIMAP` subclass it and keep what is their own: the form of
a reply, the commands, and which lines hold secrets. The words of the messages (``reply`` or
``answer``, the hints) are class attributes, so each protocol keeps its own.
"""
from __future__ import annotations

import errno
import socket
import ssl
from typing import Any, Self

from cryptography import x509

from ...core.transcript import CLIENT, REDACTED, Transcript, redact_command
from ...errors import ConfigError, ProtocolError, SMTPConnectionError, SMTPTLSError

__all__ = ["MAX_LINE", "LineClient", "describe_cert", "hostname_from", "shown_lines"]

#: Longest line accepted from a server (RFC 5321 4.5.3.1.5 says 512 octets for SMTP replies;
#: real servers send more, and an IMAP line can be long).
MAX_LINE = 65536


def hostname_from(server_name: str) -> str:
    """``mail.isp.example.net:587`` -> ``mail.isp.example.net``: the name a certificate holds."""
    name, sep, port = server_name.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else server_name


def describe_cert(der: bytes | None) -> tuple[str, str]:
    """The subject and the issuer of a DER certificate, as RFC 4514 strings (``(none)``: none)."""
    if not der:
        return "(none)", "(none)"

    cert = x509.load_der_x509_certificate(der)
    return cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()


def shown_lines(lines: list[bytes], body_lines_shown: int) -> tuple[int, int, int]:
    """How many of a message's lines a transcript shows: every header line, the blank line,
    then the first ``body_lines_shown`` body lines. Returns (shown, hidden, hidden bytes),
    counting CRLF in the bytes."""
    in_body, body_seen = False, 0
    for i, ln in enumerate(lines):
        if in_body:
            body_seen += 1
            if body_seen > body_lines_shown:
                rest = lines[i:]
                return i, len(rest), sum(len(x) + 2 for x in rest)
        elif ln == b"":
            in_body = True
    return len(lines), 0, 0


class LineClient:
    """One connection to a line-protocol server; every line goes into :attr:`transcript`.

    ``host``/``port`` say where to connect; ``server_name`` is how the transcript names the
    server (default ``host:port``) and, without ``server_hostname``, the name the TLS
    certificate must carry. ``source_address`` is the local address to connect from
    (``"127.0.20.100"`` or ``("127.0.20.100", 0)``). ``timeout`` bounds every wait in seconds.
    ``implicit_tls=True`` starts TLS before the greeting; ``cafile`` is the CA to trust (else
    the system's); ``verify=False`` encrypts without checking the certificate.
    ``reveal_secrets=True`` records secrets as sent instead of ``****``.

    A subclass sets :attr:`transcript` in its ``__init__``, reads its greeting in ``connect()``
    after :meth:`_open`, and says which lines hold secrets (:meth:`_redacted`).
    """

    # The words of the notes and errors, which each protocol puts its own way. A subclass sets
    # those without a value here (a class attribute or a property).
    connection_error: type[SMTPConnectionError] = SMTPConnectionError  #: refused, timed out, closed
    tls_error: type[SMTPTLSError] = SMTPTLSError  #: the handshake or the certificate
    reply_word = "reply"  #: what the server sends back ("no reply from ...")
    greeting = "the server's greeting"  #: what connect() reads first
    service = "the service"  #: "... the port the lab gave for the service"
    cafile_hint = ("Pass cafile= the lab CA (lab.ca_path; `labkit status --json` gives it as \"ca\") and "
                   "server_hostname= a name the certificate holds")  #: when the certificate is refused
    crlf_hint = ""  #: what to use instead of a line with CR or LF in it
    not_this_server: str  #: said of a line that never ends ("this is not an SMTP server")
    timeout_hint: str  #: what to do when no reply comes in time
    closed_hint: str  #: why a server may have hung up
    implicit_tls_hint: str  #: what to check when the handshake right after connecting fails
    tls_yes: str  #: the server's yes to STARTTLS ("220"), after which nothing may come in clear
    tls_rfc: str  #: the RFC that says so

    transcript: Transcript

    def __init__(self, host: str, port: int, *, source_address: str | tuple[str, int] | None = None,
                 timeout: float = 10.0, server_name: str | None = None, reveal_secrets: bool = False,
                 implicit_tls: bool = False, cafile: Any = None, server_hostname: str | None = None,
                 verify: bool = True):
        self.host = host
        self.port = int(port)
        self.source_address = ((source_address, 0) if isinstance(source_address, str)
                               else source_address)
        self.timeout = timeout
        self.server_name = server_name or f"{host}:{self.port}"
        self.reveal_secrets = reveal_secrets
        self.implicit_tls = implicit_tls
        self.cafile = str(cafile) if cafile else None
        self.server_hostname = server_hostname or hostname_from(self.server_name)
        self.verify = verify
        #: version, cipher, subject, issuer, verified: set once TLS is up
        self.tls_info: dict[str, Any] | None = None
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._last_sent = ""  # the last client line as recorded (for error messages)
        self._auth_pending = False  # the server asked for a SASL answer: the next line is secret
        self._in_auth = False  # the last line sent belongs to a login or a SASL exchange

    # -- state -----------------------------------------------------------------------------
    @property
    def where(self) -> str:
        """``host:port``, or ``server_name (host:port)`` when the two differ."""
        addr = f"{self.host}:{self.port}"
        return addr if self.server_name == addr else f"{self.server_name} ({addr})"

    @property
    def connected(self) -> bool:
        return self._sock is not None

    @property
    def tls(self) -> bool:
        """Whether the connection is encrypted now."""
        return self.tls_info is not None

    def __repr__(self) -> str:
        state = "TLS" if self.tls else ("connected" if self.connected else "not connected")
        return f"<{type(self).__name__} {self.where} {state}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _protocol_error(self, message: str, reply: Any = None) -> ProtocolError:
        """A ProtocolError carrying the transcript so far."""
        err = ProtocolError(message, reply)
        err.transcript = self.transcript  # type: ignore[attr-defined]
        return err

    def _error(self, cls: type[SMTPConnectionError], what: str, next_step: str) -> SMTPConnectionError:
        """An error saying what happened (also noted in the transcript), where, and what to do."""
        self.transcript.note(what)
        return cls(f"{what}. {next_step}", host=self.host, port=self.port, transcript=self.transcript)

    # -- connecting ------------------------------------------------------------------------
    def _open(self) -> None:
        """Open the TCP connection (and TLS, if implicit); the greeting is the caller's to read."""
        if self._sock is not None:
            raise ConfigError("connect", f"already connected to {self.where}",
                              f"make a new {type(self).__name__} for a new connection")
        addr = f"{self.host}:{self.port}"
        fail = self.connection_error
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout,
                                            source_address=self.source_address)
        except ConnectionRefusedError:
            raise self._error(fail, f"could not connect to {addr}: connection refused (nothing listens there)",
                              "Check that the lab is running (`labkit status`) and that this is the port "
                              f"the lab gave for {self.service}") from None
        except TimeoutError:
            raise self._error(fail, f"could not connect to {addr}: no answer within {self.timeout} s",
                              "Check the address, or raise timeout=") from None
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL and self.source_address:
                raise self._error(fail, f"could not connect to {addr} from {self.source_address[0]}: that "
                                  "address is not on this machine", "On Linux every 127.x.y.z address is "
                                  "loopback; elsewhere leave source_address unset") from None
            raise self._error(fail, f"could not connect to {addr}: {e.strerror or e}",
                              "Check the host and port, and that the lab is running") from None
        # a line-by-line dialogue: send each write at once (Nagle's algorithm would hold a short
        # line such as SMTP's lone "." back until the server acknowledges the last write)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        local = sock.getsockname()
        self.transcript.note(f"connected to {addr} from {local[0]}:{local[1]}")
        if self.implicit_tls:
            self._start_tls(self.cafile, self.server_hostname, self.verify, implicit=True)

    def _tls_context(self, cafile: str | None, verify: bool) -> ssl.SSLContext:
        if verify:
            ctx = ssl.create_default_context(cafile=cafile)
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def _start_tls(self, cafile: str | None, server_hostname: str, verify: bool, implicit: bool) -> None:
        """The TLS handshake on the open connection; notes what was agreed and who answered."""
        assert self._sock is not None
        ctx = self._tls_context(cafile, verify)
        plain, self._sock = self._sock, None
        try:
            tls_sock = ctx.wrap_socket(plain, server_hostname=server_hostname)
        except ssl.SSLCertVerificationError as e:
            plain.close()
            trust = f"the CA in {cafile}" if cafile else "this system's trusted CAs"
            raise self._error(self.tls_error,
                              f"TLS with {self.where} failed: the certificate was not accepted for "
                              f"{server_hostname!r} against {trust}: {str(e.verify_message).rstrip('.')}",
                              self.cafile_hint) from None
        except (ssl.SSLError, OSError) as e:
            plain.close()
            raise self._error(self.tls_error, f"TLS with {self.where} failed during the handshake: {e}",
                              self.implicit_tls_hint if implicit else "The server's log may say why") from None
        self._sock = tls_sock
        self._buf.clear()
        subject, issuer = describe_cert(tls_sock.getpeercert(binary_form=True))
        cipher = tls_sock.cipher()
        self.tls_info = {"version": tls_sock.version(), "cipher": cipher[0] if cipher else None,
                         "subject": subject, "issuer": issuer, "verified": verify,
                         "server_hostname": server_hostname}
        checked = f"verified for {server_hostname}" if verify else "certificate NOT verified (verify=False)"
        self.transcript.note(f"TLS established: {tls_sock.version()} {self.tls_info['cipher']}")
        self.transcript.note(f"server certificate: subject {subject}, issuer {issuer}; {checked}")

    def _upgrade(self, cafile: Any, server_hostname: str | None, verify: bool) -> None:
        """The handshake after the server said yes to STARTTLS/STLS.

        Whatever the server sent in clear after its yes is thrown away unread: an attacker on
        the path could have put it there to be read as if it came over TLS.
        """
        if self._buf:
            self.transcript.note(f"discarded {len(self._buf)} bytes the server sent in clear after "
                                 f"{self.tls_yes} ({self.tls_rfc}: they could have been injected)")
            self._buf.clear()
        self._start_tls(str(cafile) if cafile else self.cafile, server_hostname or self.server_hostname,
                        verify, implicit=False)

    # -- sending ---------------------------------------------------------------------------
    def _require_connection(self) -> socket.socket:
        if self._sock is None:
            raise self.connection_error(f"not connected to {self.where}: call .connect() first "
                                        f"(it reads {self.greeting})",
                                        host=self.host, port=self.port, transcript=self.transcript)
        return self._sock

    def _recorded_form(self, line: str) -> str:
        """``line`` as the transcript shows it: a secret becomes ``****``."""
        if self.reveal_secrets:
            return line
        if self._auth_pending:  # an answer to a SASL challenge ("*" cancels the exchange)
            return line if line.strip() == "*" else REDACTED
        return self._redacted(line)

    def _redacted(self, line: str) -> str:
        """A command line with its secrets made ``****`` (here: the argument of AUTH)."""
        return redact_command(line)

    def _send(self, data: bytes, recorded: list[str]) -> None:
        sock = self._require_connection()
        try:
            sock.sendall(data)
        except OSError as e:
            raise self._error(self.connection_error, f"could not send to {self.where}: {e.strerror or e}",
                              "The server has probably closed the connection; its last reply (in the "
                              "transcript) may say why") from None
        for text in recorded:
            self.transcript.add(CLIENT, text)
        if recorded:
            self._last_sent = recorded[-1]

    def _sending(self, line: str) -> None:
        """Called with each line just before it is sent: the answer to a challenge is on its way."""
        self._auth_pending = False

    def send_line(self, line: str) -> None:
        """Send ``line`` + CRLF and do not wait for the answer."""
        if "\r" in line or "\n" in line:
            raise ConfigError("line", f"{line!r} holds a CR or LF; one call sends one line", self.crlf_hint)
        recorded = self._recorded_form(line)
        self._sending(line)
        self._send(line.encode("utf-8") + b"\r\n", [recorded])

    def send_bytes(self, data: bytes, *, secret: bool = False) -> None:
        """Send ``data`` exactly as given, no CRLF added; recorded with ``\\r`` and ``\\n`` made
        visible, or as ``****`` with ``secret=True``."""
        text = data.decode("utf-8", "backslashreplace").replace("\r", "\\r").replace("\n", "\\n")
        self._send(bytes(data), [REDACTED if secret and not self.reveal_secrets else f"(raw) {text}"])

    # -- reading ---------------------------------------------------------------------------
    def _read_raw_line(self) -> bytes:
        """The next line from the server, without its CRLF (or bare LF)."""
        self._require_connection()
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                raw = bytes(self._buf[:end + 1])
                del self._buf[:end + 1]
                return raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
            if len(self._buf) > MAX_LINE:
                raise self._protocol_error(f"{self.where} sent a line longer than {MAX_LINE} bytes without a "
                                           f"line ending; {self.not_this_server}")
            self._buf += self._recv()

    def _read_exactly(self, n: int) -> bytes:
        """The next ``n`` octets from the server, whatever they hold."""
        while len(self._buf) < n:
            self._buf += self._recv()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _recv(self) -> bytes:
        sock = self._require_connection()
        after = f" after {self._last_sent!r}" if self._last_sent else ""
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise self._error(self.connection_error,
                              f"no {self.reply_word} from {self.where} within {self.timeout} s{after}",
                              self.timeout_hint) from None
        except ssl.SSLError as e:
            raise self._error(self.tls_error, f"TLS error while reading from {self.where}: {e}",
                              "The server's log may say why") from None
        except OSError as e:
            raise self._error(self.connection_error, f"the connection to {self.where} failed{after}: "
                              f"{e.strerror or e}", "The server's log may say why") from None
        if not chunk:
            raise self._error(self.connection_error,
                              f"{self.where} closed the connection{after} without a complete {self.reply_word}",
                              self.closed_hint)
        return chunk

    # -- commands every protocol has --------------------------------------------------------
    def command(self, line: str) -> Any:  # pragma: no cover - every protocol has its own
        raise NotImplementedError

    def noop(self) -> Any:
        """``NOOP``: nothing to do, but the server answers: the connection is still alive."""
        return self.command("NOOP")

    def _say_and_close(self, line: str) -> Any:
        """Send the last command (QUIT, LOGOUT), return the answer and close, answer or not."""
        try:
            return self.command(line)
        finally:
            self.close()

    def close(self) -> None:
        """Close the socket without a word to the server. Safe to call more than once."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        sock.close()
        self._buf.clear()
        self.transcript.note("connection closed")
