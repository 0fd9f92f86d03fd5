"""E-mail notifications end to end: `doclane up` as a real process with
DOCLANE_SMTP_URL pointing at a real SMTP server on loopback (aiosmtpd), an
e-mail subscription given on the command line (`--webhook mailto:...`), and
one invoice dropped into the inbox: the completion e-mail arrives once, with
the invoice number in its text and HTML parts."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.e2e.harness import Doclane
from tests.smtp_support import SmtpServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

INVOICE = Path(__file__).parents[1] / "fixtures" / "invoices" / "FlipkartInvoice.pdf"
PUBLIC_URL = "https://docs.example.com"


def norm(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def test_dropping_an_invoice_mails_its_invoice_number(tmp_path):
    expected = json.loads(INVOICE.with_suffix(".json").read_text())[0]["invoice_number"]
    smtp = SmtpServer()
    doclane = Doclane(tmp_path, webhook="mailto:ap@example.com", env={
        "DOCLANE_SMTP_URL": f"smtp://127.0.0.1:{smtp.port}", "DOCLANE_SMTP_FROM": "doclane <robot@example.com>",
        "DOCLANE_PUBLIC_URL": PUBLIC_URL})
    try:
        doclane.start()
        (sub,) = doclane.get("/webhooks")["webhooks"]
        assert (sub["type"], sub["recipients"]) == ("email", ["ap@example.com"])
        doclane.drop(INVOICE)
        doclane.wait_done(1)
        (doc,) = doclane.get("/documents")["documents"]
        assert doc["status"] == "indexed", doc
        (mail,) = smtp.wait_for(1, timeout=120)
        assert mail.rcpt_tos == ["ap@example.com"] and mail.mail_from == "robot@example.com"
        assert mail.message["Subject"] == f"[doclane] {INVOICE.name} indexed as invoice"
        text, html = mail.part("plain"), mail.part("html")
        for body in (text, html):
            assert norm(expected) in norm(body), body
            assert f"{PUBLIC_URL}/ui/documents/{doc['document_id']}" in body
        deadline = time.monotonic() + 60
        log = []
        while time.monotonic() < deadline:
            log = doclane.get(f"/webhooks/{sub['id']}/deliveries")["deliveries"]
            if log:
                break
            time.sleep(0.2)
        assert [(e["outcome"], e["attempts"]) for e in log] == [("delivered", 1)]  # once, at the first try
        assert len(smtp.received) == 1 and smtp.handler.data_commands == 1
    finally:
        doclane.stop()
        smtp.stop()
