"""A real SMTP server on loopback for the e-mail tests: aiosmtpd in a thread,
on a free port, recording what it accepts. It can answer DATA with scripted
replies first (451 then accept, 550 forever), speak STARTTLS or implicit TLS
with a self-signed certificate made here (cryptography), and require AUTH."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "doclane test smtp")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    def part(self, subtype: str) -> str:
        return self.message.get_body(preferencelist=(subtype,)).get_content()


@dataclass
class Handler:
    """Scripted DATA replies first (e.g. ["451 4.3.0 try later"]), then
    `reject` forever if set, else accept and record."""

    script: list[str] = field(default_factory=list)
    reject: str | None = None
    received: list[Received] = field(default_factory=list)
    data_commands: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope) -> str:
        with self.lock:
            self.data_commands += 1
            if self.script:
                return self.script.pop(0)
            if self.reject:
                return self.reject
            message = email.message_from_bytes(envelope.original_content or envelope.content,
                                               policy=email.policy.default)
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 2.0.0 OK"


class SmtpServer:
    """aiosmtpd's Controller on 127.0.0.1:<free port>. `tls` is "starttls"
    or "implicit" (then `cert` is the certificate to trust); `users` turns on
    AUTH (only after TLS, as aiosmtpd insists by default)."""

    def __init__(self, *, tls: str | None = None, cert_dir: Path | None = None,
                 users: dict[str, str] | None = None):
        self.handler = Handler()
        self.port = free_port()
        self.cert: Path | None = None
        kwargs: dict = {}
        if tls:
            assert cert_dir is not None, "TLS needs a folder for the certificate"
            self.cert, key = self_signed(cert_dir)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.cert, key)
            if tls == "implicit":
                kwargs["ssl_context"] = context
            else:
                kwargs.update(tls_context=context, require_starttls=True)
        if users is not None:
            def authenticator(server, session, envelope, mechanism, auth_data):
                ok = (isinstance(auth_data, LoginPassword)
                      and users.get(auth_data.login.decode()) == auth_data.password.decode())
                return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535
            kwargs.update(authenticator=authenticator, auth_required=True)
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, ready_timeout=30, **kwargs)
        self.controller.start()

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def wait_for(self, count: int, timeout: float = 60) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.received) < count:
            time.sleep(0.05)
        return list(self.received)

    def stop(self) -> None:
        self.controller.stop()
