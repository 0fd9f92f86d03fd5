"""E-mail subscriptions against a real SMTP server on loopback (aiosmtpd,
tests/smtp_support.py): the notify function with the real SQLite metadata
store and embedded bus; messages parsed back with the email package."""

from __future__ import annotations

import pytest

from doclane.events.envelope import new_event
from doclane.functions import binding, mailer, notify, subscriptions
from doclane.functions.context import Context
from doclane.functions.errors import ConfigError, Retryable
from doclane.functions.ports import DocumentRecord
from doclane.functions.runtime import load, triggers
from doclane.local.gateway import create_app
from tests.smtp_support import SmtpServer, free_port

FIELDS = {
    "invoice_number": {"value": "INV-2024-0042", "confidence": 0.95, "raw": "Invoice no. INV-2024-0042"},
    "total": {"value": "1210.00", "confidence": 0.9, "raw": "EUR 1,210.00"},
    "date": {"value": "2024-03-12", "confidence": 0.85, "raw": "12/03/2024"},
    "emails": {"value": ["billing@acme.example", "ap@beta.example"], "confidence": 0.6, "raw": None},
}
FILENAME = "acme <march> & co.pdf"


@pytest.fixture
def smtp():
    server = SmtpServer()
    yield server
    server.stop()


def make_context(settings, smtp: SmtpServer | None = None, **changes) -> Context:
    url = f"smtp://127.0.0.1:{smtp.port}" if smtp else None
    ctx = Context(settings.model_copy(update={"smtp_url": url, "smtp_from": "doclane <robot@doclane.example>",
                                              "public_url": "https://docs.example.com/", **changes}))
    ctx.bus.declare(triggers(ctx.settings))
    return ctx


@pytest.fixture
def ctx(settings, smtp):
    c = make_context(settings, smtp)
    yield c
    c.close()


def register(ctx, doc_id="doc-1", status="indexed", category="invoice", fields=FIELDS, error=None):
    ctx.metadata.register(DocumentRecord(
        document_id=doc_id, bucket="inbox", key=f"{doc_id}.pdf", filename=FILENAME, content_type="application/pdf",
        size=40907, sha256="a" * 64, status=status, category=category, fields=fields, error=error))


def indexed(doc_id="doc-1", category="invoice", event_id=None):
    return new_event("document.indexed", {"document_id": doc_id, "filename": FILENAME, "category": category,
                                          "chunks": 4, "fields": FIELDS}, subject=doc_id, source="index", id=event_id)


def failed(doc_id="doc-2"):
    return new_event("document.failed", {
        "document_id": doc_id, "stage": "classify", "error_type": "parse_error", "filename": "scan.pdf",
        "reason": "the PDF is encrypted: remove the password and upload it again"}, subject=doc_id, source="classify")


def subscribe(ctx, *recipients, **filters):
    sub = mailer.email_subscription(recipients or ("ap@example.com",), **filters)
    ctx.metadata.add_webhook(sub)
    return sub


def run_notify(ctx, event):
    """What the binding does for one delivery, minus the bus."""
    from doclane.functions.runtime import invoke

    return invoke(load("notify"), event, ctx)


def log_of(ctx, sub):
    return subscriptions.delivery_log(ctx.metadata.deliveries(webhook_id=sub.id))


# --------------------------------------------------------------------------- messages
def test_completion_email_has_the_documents_fields_in_text_and_html(ctx, smtp):
    register(ctx)
    sub = subscribe(ctx, "ap@example.com", "boss@example.com")
    event = indexed()
    run_notify(ctx, event)
    (mail,) = smtp.wait_for(1)
    assert mail.rcpt_tos == ["ap@example.com", "boss@example.com"] and mail.mail_from == "robot@doclane.example"
    msg = mail.message
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["Subject"] == f"[doclane] {FILENAME} indexed as invoice"
    assert msg["To"] == "ap@example.com, boss@example.com"
    assert msg["Message-ID"] == f"<{event['id']}.{sub.id}@doclane>"
    assert msg["Auto-Submitted"] == "auto-generated" and msg["X-Doclane-Document-Id"] == "doc-1"
    text, html = mail.part("plain"), mail.part("html")
    for body in (text, html):
        for value in ("INV-2024-0042", "1210.00", "2024-03-12", "billing@acme.example, ap@beta.example",
                      "invoice", "indexed", "doc-1", "https://docs.example.com/ui/documents/doc-1"):
            assert value in body, (value, body)
    # the category's field order (categories.yaml: invoice_number, date, ..., total, ..., emails)
    assert text.index("Invoice number: INV-2024-0042") < text.index("Date: 2024-03-12") < text.index("Total: 1210.00")
    assert FILENAME in text  # plain text stays as written ...
    assert "acme &lt;march&gt; &amp; co.pdf" in html and FILENAME not in html  # ... HTML is escaped
    assert "95%" in html  # confidence
    (entry,) = log_of(ctx, sub)
    assert (entry["outcome"], entry["attempts"], entry["status"], entry["last_error"]) == ("delivered", 1, 250, None)


def test_failure_email_carries_the_reason(ctx, smtp):
    register(ctx, "doc-2", status="failed", category=None, fields={}, error="classify: encrypted")
    subscribe(ctx)
    run_notify(ctx, failed())
    (mail,) = smtp.wait_for(1)
    assert mail.message["Subject"] == "[doclane] scan.pdf failed at classify"
    for body in (mail.part("plain"), mail.part("html")):
        assert "the PDF is encrypted: remove the password and upload it again" in body
        assert "classify" in body and "failed" in body and "parse_error" in body


def test_no_link_without_a_public_url(settings, smtp):
    ctx = make_context(settings, smtp, public_url=None)
    register(ctx)
    subscribe(ctx)
    run_notify(ctx, indexed())
    (mail,) = smtp.wait_for(1)
    assert "/ui/documents/" not in mail.part("plain") and "/ui/documents/" not in mail.part("html")
    ctx.close()


# --------------------------------------------------------------------------- filters
def test_event_type_and_category_filters(ctx, smtp):
    register(ctx)
    register(ctx, "doc-2", status="failed", category="invoice", fields={})
    failures_only = subscribe(ctx, "oncall@example.com", event_types=("document.failed",))
    receipts_only = subscribe(ctx, "receipts@example.com", categories=("receipt",))
    invoices = subscribe(ctx, "ap@example.com", categories=("invoice",))
    run_notify(ctx, indexed())
    run_notify(ctx, failed())
    mails = smtp.wait_for(3)
    got = sorted((m.rcpt_tos[0], m.message["X-Doclane-Event-Type"].split(".")[-2]) for m in mails)
    # the failed document's category comes from the store (the event has none)
    assert got == [("ap@example.com", "failed"), ("ap@example.com", "indexed"), ("oncall@example.com", "failed")]
    assert log_of(ctx, receipts_only) == [] and len(log_of(ctx, failures_only)) == 1 and len(log_of(ctx, invoices)) == 2


def test_batch_completed_is_not_mailed(ctx, smtp):
    subscribe(ctx)
    event = new_event("batch.completed", {"batch_id": "b1", "total": 1, "indexed": 1, "failed": 0,
                                          "status": "completed"}, subject=None, source="notify")
    run_notify(ctx, event)
    assert smtp.handler.data_commands == 0 and ctx.metadata.deliveries() == []


# --------------------------------------------------------------------------- exactly once, retries
def test_the_same_event_twice_sends_one_email(ctx, smtp):
    register(ctx)
    sub = subscribe(ctx)
    event = indexed()
    run_notify(ctx, event)
    run_notify(ctx, event)  # a redelivery: the delivery log says it went out
    assert ctx.bus.publish(event) is True and ctx.bus.publish(event) is False  # and the bus drops a re-publish
    binding.consume(ctx.bus, load("notify"), ctx, idle_seconds=0.5)
    assert len(smtp.wait_for(1)) == 1 and smtp.handler.data_commands == 1
    assert [e["attempts"] for e in log_of(ctx, sub)] == [1]


def test_451_is_retried_with_backoff_through_the_bus_and_delivered_once(ctx, smtp):
    register(ctx)
    sub = subscribe(ctx)
    smtp.handler.script = ["451 4.3.0 Mailbox busy, try again later"]
    ctx.bus.publish(indexed())
    settled = binding.consume(ctx.bus, load("notify"), ctx, idle_seconds=1.0, max_attempts=ctx.settings.max_attempts)
    assert settled == 2  # the first delivery was nacked for a retry, the second acked
    (mail,) = smtp.wait_for(1)
    assert "INV-2024-0042" in mail.part("plain")
    attempts = ctx.metadata.deliveries(webhook_id=sub.id)
    assert [(a["ok"], a["status"], a["attempt"], a["permanent"]) for a in attempts] == [
        (False, 451, 1, False), (True, 250, 2, False)]
    assert "451" in attempts[0]["error"] and "Mailbox busy" in attempts[0]["error"]
    (entry,) = log_of(ctx, sub)
    assert (entry["outcome"], entry["attempts"], entry["last_error"]) == ("delivered", 2, attempts[0]["error"])
    assert ctx.bus.dead_letters("notify") == []


def test_550_is_final_logged_and_not_retried(ctx, smtp):
    register(ctx)
    sub = subscribe(ctx)
    smtp.handler.reject = "550 5.1.1 No such user here"
    ctx.bus.publish(indexed())
    settled = binding.consume(ctx.bus, load("notify"), ctx, idle_seconds=1.0, max_attempts=ctx.settings.max_attempts)
    assert settled == 1 and smtp.handler.data_commands == 1 and smtp.received == []
    (entry,) = log_of(ctx, sub)
    assert (entry["outcome"], entry["attempts"], entry["status"]) == ("failed", 1, 550)
    assert "No such user" in entry["last_error"]
    assert ctx.bus.dead_letters("notify") == [] and ctx.bus.backlog("notify") == 0
    run_notify(ctx, indexed(event_id=entry["event_id"]))  # even a redelivery does not try again
    assert smtp.handler.data_commands == 1


def test_a_refused_recipient_is_final_and_does_not_block_the_others(ctx, smtp):
    register(ctx)
    ok = subscribe(ctx, "ap@example.com")
    bad = subscribe(ctx, "nobody@example.com")

    async def handle_RCPT(server, session, envelope, address, options):
        if address.startswith("nobody@"):
            return "550 5.1.1 unknown recipient"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    smtp.handler.handle_RCPT = handle_RCPT
    run_notify(ctx, indexed())
    assert [m.rcpt_tos for m in smtp.wait_for(1)] == [["ap@example.com"]]
    assert log_of(ctx, ok)[0]["outcome"] == "delivered"
    entry = log_of(ctx, bad)[0]
    assert entry["outcome"] == "failed" and "recipients refused" in entry["last_error"] and entry["status"] == 550


def test_connection_refused_is_transient(settings):
    ctx = make_context(settings, smtp_url=f"smtp://127.0.0.1:{free_port()}")
    register(ctx)
    sub = subscribe(ctx)
    with pytest.raises(Retryable, match="ap@example.com"):
        run_notify(ctx, indexed())
    (entry,) = log_of(ctx, sub)
    assert entry["outcome"] == "retrying" and "ConnectionRefusedError" in entry["last_error"]
    ctx.close()


def test_without_an_smtp_url_the_delivery_fails_for_good(settings):
    ctx = make_context(settings, None)
    register(ctx)
    sub = subscribe(ctx)
    run_notify(ctx, indexed())  # no Retryable: retrying cannot configure SMTP
    (entry,) = log_of(ctx, sub)
    assert entry["outcome"] == "failed" and "DOCLANE_SMTP_URL" in entry["last_error"]
    ctx.close()


# --------------------------------------------------------------------------- TLS and AUTH
def test_starttls_with_auth(settings, tmp_path):
    server = SmtpServer(tls="starttls", cert_dir=tmp_path, users={"mailer": "s3cret/pass"})
    try:
        ctx = make_context(settings, smtp_url=f"smtp://mailer:s3cret%2Fpass@127.0.0.1:{server.port}?starttls=true",
                           smtp_ca_file=server.cert)
        register(ctx)
        sub = subscribe(ctx)
        run_notify(ctx, indexed())
        (mail,) = server.wait_for(1)
        assert "INV-2024-0042" in mail.part("html")
        assert log_of(ctx, sub)[0]["outcome"] == "delivered"
        ctx.close()

        wrong = make_context(settings.model_copy(update={"data_dir": tmp_path / "other"}),
                             smtp_url=f"smtp://mailer:wrong@127.0.0.1:{server.port}?starttls=true",
                             smtp_ca_file=server.cert)
        register(wrong)
        sub = subscribe(wrong)
        run_notify(wrong, indexed())  # 535: refused for good, not retried
        entry = log_of(wrong, sub)[0]
        assert (entry["outcome"], entry["status"]) == ("failed", 535) and "wrong" not in entry["last_error"]
        wrong.close()

        untrusted = make_context(settings.model_copy(update={"data_dir": tmp_path / "third"}),
                                 smtp_url=f"smtp://mailer:s3cret%2Fpass@127.0.0.1:{server.port}?starttls=true")
        register(untrusted)
        subscribe(untrusted)
        with pytest.raises(Retryable, match="CERTIFICATE_VERIFY_FAILED"):  # the system CAs do not know it
            run_notify(untrusted, indexed())
        untrusted.close()
        assert len(server.received) == 1
    finally:
        server.stop()


def test_implicit_tls(settings, tmp_path):
    server = SmtpServer(tls="implicit", cert_dir=tmp_path)
    try:
        ctx = make_context(settings, smtp_url=f"smtps://127.0.0.1:{server.port}", smtp_ca_file=server.cert)
        register(ctx)
        subscribe(ctx)
        run_notify(ctx, indexed())
        assert "INV-2024-0042" in server.wait_for(1)[0].part("plain")
        ctx.close()
    finally:
        server.stop()


# --------------------------------------------------------------------------- configuration
def test_smtp_urls():
    plain = mailer.SmtpConfig.parse("smtp://relay.example", sender="a@b.example")
    assert (plain.host, plain.port, plain.security, plain.username) == ("relay.example", 25, "plain", None)
    tls = mailer.SmtpConfig.parse("smtps://u%40x:p%3Aw@mail.example")
    assert (tls.port, tls.security, tls.username, tls.password) == (465, "tls", "u@x", "p:w")
    assert tls.sender.startswith("doclane@")
    upgrade = mailer.SmtpConfig.parse("smtp://u:p@mail.example?starttls=TRUE")
    assert (upgrade.port, upgrade.security) == (587, "starttls")
    assert upgrade.describe() == "smtp://u@mail.example:587?starttls=true"  # no password
    for bad, message in (("http://mail.example", "use smtp://"), ("smtp://", "names no host"),
                         ("smtps://h?starttls=true", "TLS already"), ("smtp://h?tls=1", "unknown option"),
                         ("smtp://h?starttls=maybe", "true or false"), ("smtp://u:hunter2@h:99999", "bad port")):
        with pytest.raises(ConfigError, match=message) as err:
            mailer.SmtpConfig.parse(bad)
        assert "hunter2" not in str(err.value)
    with pytest.raises(ConfigError, match="DOCLANE_SMTP_FROM"):
        mailer.SmtpConfig.parse("smtp://h", sender="not an address")


def test_bad_smtp_settings_stop_start_up_without_showing_the_password(settings):
    from doclane.functions.settings import load

    with pytest.raises(ConfigError, match=r"DOCLANE_SMTP_URL='smtp://u:\*\*\*@h\?tls=1': unknown option") as err:
        load(data_dir=settings.data_dir, smtp_url="smtp://u:hunter2@h?tls=1")
    assert "hunter2" not in str(err.value)
    with pytest.raises(ConfigError, match="DOCLANE_SMTP_FROM='nobody' is not valid"):
        load(data_dir=settings.data_dir, smtp_from="nobody")
    assert load(data_dir=settings.data_dir, smtp_url="smtps://u:p@mail.example").smtp_url == "smtps://u:p@mail.example"


def test_recipients_are_checked():
    sub = mailer.email_subscription(["a@x.example", "b+tag@y.example", "a@x.example"])
    assert sub.url == "mailto:a@x.example,b+tag@y.example" and sub.kind == "email" and sub.secret == ""
    assert mailer.recipients(sub.url) == ["a@x.example", "b+tag@y.example"]
    assert mailer.email_subscription("mailto:b+tag@y.example,a@x.example").id != sub.id
    for bad in (["nobody"], ["a@x.example\r\nBcc: evil@x.example"], [], ["two words@x.example"]):
        with pytest.raises(ValueError):
            mailer.email_subscription(bad)
    with pytest.raises(ValueError, match="no \\?header"):
        mailer.recipients("mailto:a@x.example?subject=hi")
    with pytest.raises(ValueError, match="carry document.indexed, document.failed"):
        mailer.email_subscription(["a@x.example"], event_types=("batch.completed",))


# --------------------------------------------------------------------------- the API
API_KEY = "email-test-admin-key"


def test_subscriptions_api_and_delivery_log(settings, smtp):
    ctx = make_context(settings, smtp, api_key=API_KEY)
    client = create_app(ctx).test_client()
    auth = {"Authorization": f"Bearer {API_KEY}"}
    made = client.post("/webhooks", json={"type": "email", "recipients": ["ap@example.com"],
                                          "event_types": ["document.indexed"], "categories": ["invoice"]}, headers=auth)
    assert made.status_code == 201, made.json
    sub = made.json
    assert sub["type"] == "email" and sub["url"] == "mailto:ap@example.com" and "secret" not in sub
    assert (sub["recipients"], sub["categories"], sub["event_types"]) == (["ap@example.com"], ["invoice"],
                                                                          ["document.indexed"])
    same = client.post("/webhooks", json={"url": "mailto:ap@example.com"}, headers=auth).json
    assert same["id"] == sub["id"] and same["categories"] == []  # the same recipients: filters replaced
    for body, title in (({"type": "email", "recipients": ["nope"]}, "Bad recipients"),
                        ({"type": "email"}, "Bad recipients"),
                        ({"url": "mailto:a@x.example", "event_types": ["batch.completed"]}, "Bad recipients"),
                        ({"url": "mailto:a@x.example", "categories": ["poems"]}, "Unknown category"),
                        ({"url": "mailto:a@x.example", "event_types": ["document.exploded"]}, "Unknown event type"),
                        ({"type": "pigeon", "url": "mailto:a@x.example"}, "Bad type")):
        resp = client.post("/webhooks", json=body, headers=auth)
        assert (resp.status_code, resp.json["title"]) == (422, title), body
    listed = client.get("/webhooks", headers=auth).json["webhooks"]
    assert [(w["type"], w["recipients"]) for w in listed] == [("email", ["ap@example.com"])]

    register(ctx)
    smtp.handler.script = ["421 4.7.0 slow down"]
    with pytest.raises(Retryable):
        run_notify(ctx, indexed())
    run_notify(ctx, indexed(event_id=ctx.metadata.deliveries()[0]["event_id"]))
    log = client.get(f"/webhooks/{sub['id']}/deliveries", headers=auth).json["deliveries"]
    assert [(e["outcome"], e["attempts"], e["status"]) for e in log] == [("delivered", 2, 250)]
    assert "421" in log[0]["last_error"]
    assert client.get("/webhooks/nope/deliveries", headers=auth).status_code == 404
    assert client.delete(f"/webhooks/{sub['id']}", headers=auth).status_code == 204
    assert client.get(f"/webhooks/{sub['id']}/deliveries", headers=auth).status_code == 200  # the log stays
    ctx.close()


# --------------------------------------------------------------------------- doctor
def test_doctor_checks_the_smtp_server(settings, tmp_path):
    from doclane.local import doctor

    assert doctor.smtp(settings, 3).status == "off"
    server = SmtpServer(tls="starttls", cert_dir=tmp_path, users={"mailer": "s3cret"})
    try:
        good = settings.model_copy(update={"smtp_url": f"smtp://mailer:s3cret@127.0.0.1:{server.port}?starttls=true",
                                           "smtp_ca_file": server.cert})
        line = doctor.smtp(good, 5)
        assert (line.status, line.system) == ("ok", "smtp"), line
        assert "STARTTLS, logged in as mailer" in line.text and "s3cret" not in line.text
        wrong = good.model_copy(update={"smtp_url": f"smtp://mailer:nope@127.0.0.1:{server.port}?starttls=true"})
        line = doctor.smtp(wrong, 5)
        assert line.status == "FAIL" and "login refused" in line.text and "nope" not in line.text
    finally:
        server.stop()
    closed = settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{free_port()}"})
    line = doctor.smtp(closed, 3)
    assert line.status == "FAIL" and "connection refused" in line.text and "DOCLANE_SMTP_URL" in line.text
