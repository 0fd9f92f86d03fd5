"""E-mail subscriptions: document.indexed and document.failed as e-mails, sent
over SMTP with the standard library (smtplib, email.message.EmailMessage).

Configuration is one URL, DOCLANE_SMTP_URL:

  smtp://host:25                      plain SMTP (a local relay)
  smtp://user:pass@host:587?starttls=true   upgrade with STARTTLS, then log in
  smtps://user:pass@host:465          TLS from the first byte (implicit TLS)

plus DOCLANE_SMTP_FROM (the From address), DOCLANE_SMTP_TIMEOUT and
DOCLANE_SMTP_CA_FILE (a CA bundle to trust instead of the system's).

Each message is multipart/alternative: plain text and HTML, rendered from
the Jinja2 templates in functions/templates/email/ (HTML autoescaped, so a
file called `<script>.pdf` stays text). Its Message-ID is derived from the
subscription and the event id, so a receiver can drop the copy a crash
between sending and recording might cause.

Outcomes follow the reply code classes of RFC 5321 (4.2.1): a 4yz reply, a
refused or timed-out connection or a dropped session is transient, and the
notify function raises Retryable so the bus retries the event with back-off
(DOCLANE_MAX_ATTEMPTS, DOCLANE_RETRY_BACKOFF) before dead-lettering it; a 5yz
reply is permanent: the attempt is recorded as final and never repeated.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import uuid
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence
from urllib.parse import parse_qs, quote, unquote, urlsplit

import jinja2
from cloudevents.http import CloudEvent

from doclane.functions.errors import ConfigError
from doclane.functions.ports import DocumentRecord, Webhook

TEMPLATES = Path(__file__).parent / "templates" / "email"
# The events an e-mail subscription can carry: each has its templates.
EMAIL_EVENTS = ("document.indexed", "document.failed")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


# --------------------------------------------------------------------------- recipients
def check_address(value: str) -> str:
    """An addr-spec (local@domain), or ValueError saying what is wrong. Header
    injection (CR/LF) and display names are refused: a recipient is an address."""
    value = str(value).strip()
    if "@" not in value:
        raise ValueError(f"{value!r} is not an e-mail address (local@domain)")
    try:
        address = Address(addr_spec=value)
    except (ValueError, TypeError) as exc:  # email's parser raises ValueError subclasses
        raise ValueError(f"{value!r} is not an e-mail address: {exc}") from None
    if not address.username or not address.domain:
        raise ValueError(f"{value!r} is not an e-mail address (local@domain)")
    return address.addr_spec


def mailto(recipients: Iterable[str]) -> str:
    """The subscription's URL: mailto: with the addresses (RFC 6068)."""
    addresses = [check_address(r) for r in recipients]
    if not addresses:
        raise ValueError("an e-mail subscription needs at least one recipient")
    return "mailto:" + ",".join(quote(a, safe="@!$'*+-._~") for a in dict.fromkeys(addresses))


def recipients(url: str) -> list[str]:
    """The addresses of a mailto: URL; ValueError for anything else. Header
    fields (`?subject=`) are refused: doclane writes the message itself."""
    if not url.lower().startswith("mailto:"):
        raise ValueError(f"{url!r} is not a mailto: URL")
    body = url[len("mailto:"):]
    if "?" in body:
        raise ValueError("mailto: subscriptions take addresses only, no ?header fields")
    addresses = [check_address(unquote(a)) for a in body.split(",") if a.strip()]
    if not addresses:
        raise ValueError("an e-mail subscription needs at least one recipient")
    return addresses


def email_subscription(to: Iterable[str] | str, event_types: Sequence[str] = (),
                       categories: Sequence[str] = ()) -> Webhook:
    """An e-mail subscription: the same model (and table, API and delivery
    log) as a webhook, with a mailto: URL and no signing secret. The id comes
    from the URL, as a webhook's does, so subscribing the same recipients
    again replaces the filters."""
    url = mailto(recipients(to) if isinstance(to, str) else to)
    unknown = [t for t in event_types if t not in EMAIL_EVENTS]
    if unknown:
        raise ValueError(f"e-mail subscriptions carry {', '.join(EMAIL_EVENTS)}, not {', '.join(unknown)}")
    return Webhook(id=str(uuid.uuid5(uuid.NAMESPACE_URL, url)), url=url, secret="",
                   event_types=tuple(event_types), categories=tuple(categories))


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: Literal["plain", "starttls", "tls"]
    username: str | None
    password: str | None
    sender: str  # the From header, maybe with a display name
    timeout: float = 20.0
    ca_file: Path | None = None

    @classmethod
    def from_settings(cls, settings) -> "SmtpConfig":
        """Parsed once per distinct configuration; ConfigError names what to set."""
        return _config(settings.smtp_url, settings.smtp_from, settings.smtp_timeout, settings.smtp_ca_file)

    @classmethod
    def parse(cls, url: str, *, sender: str | None = None, timeout: float = 20.0,
              ca_file: Path | None = None) -> "SmtpConfig":
        parts = urlsplit(url)
        shown = _without_password(url)
        scheme = parts.scheme.lower()
        if scheme not in ("smtp", "smtps"):
            raise ConfigError(f"DOCLANE_SMTP_URL={shown!r}: use smtp://host:port (add ?starttls=true to upgrade) "
                              "or smtps://host:465 for implicit TLS")
        if not parts.hostname:
            raise ConfigError(f"DOCLANE_SMTP_URL={shown!r} names no host")
        query = {k.lower(): v[-1].lower() for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        unknown = set(query) - {"starttls"}
        if unknown:
            raise ConfigError(f"DOCLANE_SMTP_URL={shown!r}: unknown option(s) {', '.join(sorted(unknown))}; "
                              "the only one is ?starttls=true")
        starttls = query.get("starttls", "false")
        if starttls not in _TRUE + _FALSE:
            raise ConfigError(f"DOCLANE_SMTP_URL={shown!r}: starttls must be true or false")
        if scheme == "smtps" and starttls in _TRUE:
            raise ConfigError(f"DOCLANE_SMTP_URL={shown!r}: smtps:// is TLS already; STARTTLS is for smtp://")
        security = "tls" if scheme == "smtps" else "starttls" if starttls in _TRUE else "plain"
        try:
            port = parts.port or {"tls": 465, "starttls": 587, "plain": 25}[security]
        except ValueError:
            raise ConfigError(f"DOCLANE_SMTP_URL={shown!r} has a bad port") from None
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        return cls(host=parts.hostname, port=port, security=security, username=username, password=password,
                   sender=_sender(sender), timeout=timeout, ca_file=Path(ca_file) if ca_file else None)

    @property
    def envelope_from(self) -> str:
        return parseaddr(self.sender)[1]

    def describe(self) -> str:
        """Where mail goes, without the password (for errors and `doctor`)."""
        scheme = "smtps" if self.security == "tls" else "smtp"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}" + ("?starttls=true" if self.security == "starttls" else "")


def _sender(value: str | None) -> str:
    if not value:
        return f"doclane@{socket.gethostname() or 'localhost'}"
    name, address = parseaddr(value)
    try:
        check_address(address)
    except ValueError as exc:
        raise ConfigError(f"DOCLANE_SMTP_FROM={value!r}: {exc}") from None
    return value.strip()


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


# --------------------------------------------------------------------------- messages
@lru_cache(maxsize=1)
def _templates() -> jinja2.Environment:
    # Autoescape by extension: the .html templates escape every value, the
    # .txt ones must not (an ampersand in a filename stays an ampersand).
    # StrictUndefined: a template naming a value that is not passed fails
    # loudly in the tests instead of mailing a blank.
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                              autoescape=jinja2.select_autoescape(enabled_extensions=("html",),
                                                                  default_for_string=False),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def _label(name: str) -> str:
    return name.replace("_", " ").strip().capitalize()


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, dict):  # a field as stored: {"value": ..., "confidence": ...}
        return _value(value.get("value"))
    return "" if value is None else str(value)


def _one_line(text: str) -> str:
    """Header text: no line breaks or other control characters (a filename
    may hold anything), folded to single spaces."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def template_values(event: CloudEvent, record: DocumentRecord | None, *, public_url: str | None = None,
                    field_order: Sequence[str] = ()) -> dict[str, Any]:
    """What the templates may use, from the event (what this pass produced)
    and the document's record (what the event does not carry)."""
    data = event.get_data() if isinstance(event.get_data(), dict) else {}
    name = ".".join(event["type"].split(".")[2:-1])  # io.doclane.document.indexed.v1 -> document.indexed
    document_id = data.get("document_id") or event.get("subject") or ""
    raw_fields = data.get("fields") or (record.fields if record else {}) or {}
    order = [f for f in field_order if f in raw_fields] + [f for f in raw_fields if f not in field_order]
    fields = [{"name": f, "label": _label(f), "value": _value(raw_fields[f]),
               "confidence": (raw_fields[f] or {}).get("confidence") if isinstance(raw_fields[f], dict) else None}
              for f in order if _value(raw_fields[f]) != ""]
    filename = data.get("filename") or (record.filename if record else None) or document_id
    link = f"{public_url.rstrip('/')}/ui/documents/{quote(document_id, safe='')}" if public_url and document_id else None
    return {
        "event": {"id": event["id"], "type": event["type"], "name": name, "time": event.get("time") or ""},
        "document": {
            "id": document_id,
            "filename": filename,
            "category": data.get("category") or (record.category if record else None) or "",
            "status": "indexed" if name == "document.indexed" else "failed",
            "chunks": data.get("chunks"),
            "size": record.size if record else None,
            "content_type": (record.content_type if record else None) or "",
            "uploaded": (record.created_at if record else None) or "",
            "batch_id": data.get("batch_id") or (record.batch_id if record else None) or "",
        },
        "fields": fields,
        "failure": {"stage": data.get("stage", ""), "reason": data.get("reason", ""),
                    "error_type": data.get("error_type", "")} if name == "document.failed" else None,
        "link": link,
    }


def render(sub: Webhook, event: CloudEvent, record: DocumentRecord | None, *, sender: str,
           public_url: str | None = None, field_order: Sequence[str] = ()) -> EmailMessage:
    """The message for one subscription and event: text and HTML alternatives."""
    values = template_values(event, record, public_url=public_url, field_order=field_order)
    name = values["event"]["name"]
    if name not in EMAIL_EVENTS:
        raise ValueError(f"no e-mail template for {name}; e-mails carry {', '.join(EMAIL_EVENTS)}")
    env = _templates()
    msg = EmailMessage()
    msg["Subject"] = _one_line(env.get_template(f"{name}.subject.txt").render(values))
    msg["From"] = sender
    msg["To"] = ", ".join(recipients(sub.url))
    msg["Date"] = formatdate(usegmt=True)
    # Deterministic: the same event to the same subscription is the same message.
    msg["Message-ID"] = f"<{event['id']}.{sub.id}@doclane>"
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
    msg["X-Doclane-Event-Type"] = event["type"]
    msg["X-Doclane-Document-Id"] = _one_line(values["document"]["id"])
    msg.set_content(env.get_template(f"{name}.txt").render(values))
    msg.add_alternative(env.get_template(f"{name}.html").render(values), subtype="html")
    return msg


# --------------------------------------------------------------------------- sending
@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: int | None  # the SMTP reply code that decided, when there was one
    error: str | None = None
    permanent: bool = False  # a failure retrying cannot fix: recorded as final


def _reply(code: int, text: bytes | str) -> str:
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return f"SMTP {code} {' '.join(text.split())}".strip()


class Mailer:
    """Sends one message per call on a fresh connection: notifications are
    few, and a connection kept open would time out between documents."""

    def __init__(self, config: SmtpConfig):
        self.config = config

    def _tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.config.ca_file) if self.config.ca_file else None)

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        if c.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout, context=self._tls())
        else:
            smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
        try:
            if c.security == "starttls":
                smtp.starttls(context=self._tls())
            if c.username:
                smtp.login(c.username, c.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def check(self) -> str:
        """Connect, upgrade and log in as a delivery would, then say what the
        server offered (`doclane doctor`); raises what a delivery would meet."""
        with self._connect() as smtp:
            code, _ = smtp.noop()
            if code != 250:
                raise smtplib.SMTPResponseException(code, b"NOOP refused")
            size = smtp.esmtp_features.get("size")
        tls = {"tls": "implicit TLS", "starttls": "STARTTLS", "plain": "no TLS"}[self.config.security]
        login = f"logged in as {self.config.username}" if self.config.username else "no login"
        return f"{tls}, {login}" + (f", messages up to {int(size) // 1_000_000} MB" if size and size.isdigit() else "")

    def send(self, message: EmailMessage, to: Sequence[str]) -> Outcome:
        try:
            with self._connect() as smtp:
                refused = smtp.send_message(message, from_addr=self.config.envelope_from, to_addrs=list(to))
        except smtplib.SMTPRecipientsRefused as exc:  # every recipient refused
            codes = [code for code, _ in exc.recipients.values()]
            detail = "; ".join(f"{addr}: {_reply(code, text)}" for addr, (code, text) in exc.recipients.items())
            return Outcome(False, max(codes, default=None), f"recipients refused: {detail}",
                           permanent=bool(codes) and all(code >= 500 for code in codes))
        except smtplib.SMTPResponseException as exc:  # sender, data, auth, greeting... refused with a code
            return Outcome(False, exc.smtp_code, _reply(exc.smtp_code, exc.smtp_error),
                           permanent=exc.smtp_code >= 500)
        except smtplib.SMTPNotSupportedError as exc:  # e.g. no STARTTLS or AUTH: the configuration must change
            return Outcome(False, None, f"{self.config.describe()}: {exc}", permanent=True)
        except (smtplib.SMTPException, OSError) as exc:  # refused, reset, timed out, TLS handshake: transient
            return Outcome(False, None, f"{self.config.describe()}: {type(exc).__name__}: {exc}")
        if refused:  # some recipients took it: delivered, the others named
            detail = "; ".join(f"{addr}: {_reply(code, text)}" for addr, (code, text) in refused.items())
            return Outcome(True, 250, f"some recipients refused: {detail}")
        return Outcome(True, 250)


def deliver(sub: Webhook, event: CloudEvent, record: DocumentRecord | None, settings, *,
            field_order: Sequence[str] = ()) -> Outcome:
    """Render and send one event to one e-mail subscription. Without
    DOCLANE_SMTP_URL the attempt fails for good: retrying cannot configure it."""
    try:
        config = SmtpConfig.from_settings(settings)
    except ConfigError as exc:
        return Outcome(False, None, str(exc), permanent=True)
    message = render(sub, event, record, sender=config.sender, public_url=settings.public_url,
                     field_order=field_order)
    return Mailer(config).send(message, recipients(sub.url))


@lru_cache(maxsize=4)
def _config(url: str | None, sender: str | None, timeout: float, ca_file: Path | None) -> SmtpConfig:
    if not url:
        raise ConfigError("e-mail subscriptions need DOCLANE_SMTP_URL, e.g. smtp://user:pass@mail.example.com:587?starttls=true")
    return SmtpConfig.parse(url, sender=sender, timeout=timeout, ca_file=ca_file)
