"""SSRF on webhook URLs (functions/urlguard.py): internal addresses are
refused at registration (POST /webhooks, `doclane up --webhook`) and again
right before each delivery, which goes to the address that was checked; a
redirect is never followed. Real HTTP servers on loopback as receivers; a
resolver function stands in for DNS where a test needs a name to change its
answer (DNS rebinding), since no DNS server of ours runs here."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

import pytest

from doclane.events.envelope import new_event
from doclane.functions import urlguard
from doclane.functions.context import Context
from doclane.functions.errors import ConfigError
from doclane.functions.ports import Webhook
from doclane.functions.settings import load
from doclane.functions.webhooks import Sender
from doclane.local.gateway import create_app
from tests.e2e.harness import SECRET, Receiver
from tests.e2e.harness import serve_loopback

ADMIN = "ssrf-admin-key"
AUTH = {"Authorization": f"Bearer {ADMIN}"}

REFUSED = [
    ("http://127.0.0.1:9/hook", "loopback"),
    ("http://127.1.2.3/", "loopback"),
    ("http://[::1]:8080/", "loopback"),
    ("http://localhost/", "loopback"),
    ("http://2130706433/", "loopback"),  # 127.0.0.1 as one number: resolved, then judged
    ("http://0x7f.1/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),  # IPv4-mapped IPv6
    ("http://169.254.169.254/latest/meta-data/", "link-local"),  # the cloud metadata service
    ("http://[fe80::1]/", "link-local"),
    ("http://10.0.0.5/", "private"),
    ("http://172.16.1.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://100.64.0.1/", "private"),  # carrier-grade NAT
    ("http://[fc00::1]/", "private"),
    ("http://[fd12:3456::1]/", "private"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("ftp://example.com/hook", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("gopher://127.0.0.1:6379/_INFO", "http:// or https://"),
    ("https://user:secret@hooks.example.com/", "credentials"),
    ("http://:80/", "no host"),
    ("http://[::1/", "not a valid URL"),
    ("", "empty"),
]


def public(host: str, port: int) -> list[str]:
    """A stand-in for DNS: every name is a public address (TEST-NET is not
    public, so a real one: 93.184.215.14 was example.com's)."""
    return ["93.184.215.14"]


@pytest.mark.parametrize("url, why", REFUSED)
def test_internal_and_malformed_urls_are_refused_with_the_reason(url, why):
    with pytest.raises(urlguard.UnsafeUrl, match=why):
        urlguard.check(url, "")


def test_public_addresses_pass_and_the_allow_list_opens_named_hosts_and_networks():
    assert urlguard.check("https://93.184.215.14/hook").addresses == ("93.184.215.14",)
    assert urlguard.check("https://hooks.example.com/x", resolve=public).addresses == ("93.184.215.14",)
    assert urlguard.check("http://127.0.0.1:9/h", "127.0.0.1").addresses == ("127.0.0.1",)
    assert urlguard.check("http://10.1.2.3/h", "10.0.0.0/8").addresses == ("10.1.2.3",)
    assert urlguard.check("http://[::1]/h", "::1").addresses == ("::1",)
    assert urlguard.check("http://[::ffff:127.0.0.1]/h", "127.0.0.1")  # judged as the IPv4 it maps
    # a host on the list is not resolved at all: the operator vouches for it
    assert urlguard.check("http://hooks.corp.example/h", "*.corp.example").addresses == ()
    assert urlguard.check("http://corp.example/h", ".corp.example").addresses == ()
    with pytest.raises(urlguard.UnsafeUrl, match="DOCLANE_WEBHOOK_ALLOW=10.1.2.3"):
        urlguard.check("http://10.1.2.3/h", "127.0.0.1, 192.168.0.0/16, hooks.corp.example")
    # a name resolving to any internal address is refused, even if another answer is public
    with pytest.raises(urlguard.UnsafeUrl, match=r"hooks.example.com \(10.0.0.1\), a private address"):
        urlguard.check("https://hooks.example.com/", resolve=lambda h, p: ["93.184.215.14", "10.0.0.1"])


def test_a_name_that_does_not_resolve_is_refused():
    def nxdomain(host, port):
        raise OSError("Name or service not known")

    with pytest.raises(urlguard.UnsafeUrl, match="does not resolve"):
        urlguard.check("https://nowhere.example/", resolve=nxdomain)


def test_a_bad_allow_list_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCLANE_WEBHOOK_ALLOW", "127.0.0.1, not a host/at all")
    with pytest.raises(ConfigError, match="DOCLANE_WEBHOOK_ALLOW"):
        load(data_dir=tmp_path)


@pytest.fixture
def gateway(settings):
    def make(**changes):
        context = Context(settings.model_copy(update={"api_key": ADMIN, **changes}))
        made.append(context)
        return context, create_app(context).test_client()

    made: list[Context] = []
    yield make
    for context in made:
        context.close()


def test_registration_refuses_internal_urls_with_the_reason(gateway):
    context, client = gateway()
    for url in ("http://127.0.0.1:9/h", "http://169.254.169.254/latest/meta-data/", "http://[fd00::1]/",
                "http://user:pw@93.184.215.14/", "ftp://93.184.215.14/"):
        resp = client.post("/webhooks", json={"url": url}, headers=AUTH)
        assert resp.status_code in (400, 422), (url, resp.status_code)
        assert resp.content_type == "application/problem+json"
        assert resp.json["title"] == "Bad URL" and resp.json["detail"], url
    assert context.metadata.webhooks() == []
    # the same URL once the operator allows loopback
    allowed, client = gateway(webhook_allow="127.0.0.0/8")
    assert client.post("/webhooks", json={"url": "http://127.0.0.1:9/h"}, headers=AUTH).status_code == 201
    assert [h.url for h in allowed.metadata.webhooks()] == ["http://127.0.0.1:9/h"]


def test_doclane_up_refuses_an_internal_webhook_unless_allowed(settings):
    from doclane.local.up import Runtime

    with pytest.raises(ConfigError, match="loopback address.*DOCLANE_WEBHOOK_ALLOW"):
        Runtime(settings, webhooks=("http://127.0.0.1:9/hook",))


def event():
    return new_event("document.indexed", {"document_id": "d1", "filename": "a.pdf", "category": "invoice",
                                          "chunks": 1}, subject="d1", source="test")


def test_delivery_rechecks_the_address_dns_rebinding(tmp_path):
    """Registered while the name pointed at a public address; by delivery it
    points at loopback, where a receiver listens: nothing reaches it."""
    receiver = Receiver()
    answers = iter([["93.184.215.14"], ["127.0.0.1"]])
    resolve = lambda host, port: next(answers)  # noqa: E731 - first registration, then delivery
    port = receiver.server.server_address[1]
    try:
        url = f"http://rebind.example:{port}/hook"
        urlguard.check(url, resolve=resolve)  # registration: fine
        hook = Webhook("h1", url, SECRET)
        sender = Sender(timeout=5, resolve=resolve)
        ok, status, error = sender.send(hook, event())
        assert not ok and status is None and "refused" in error and "loopback" in error
        assert receiver.calls == 0
        sender.close()
    finally:
        receiver.close()


def test_delivery_goes_to_the_checked_address_with_the_name_as_host():
    """The name is resolved once, by the check; the connection goes to that
    address and the request still names the host (Host header)."""
    receiver = Receiver()
    port = receiver.server.server_address[1]
    calls = []

    def resolve(host, port_):
        calls.append(host)
        return ["127.0.0.1"]

    try:
        sender = Sender(timeout=5, allow="127.0.0.1", resolve=resolve)
        ok, status, error = sender.send(Webhook("h1", f"http://hooks.internal.test:{port}/hook", SECRET), event())
        assert ok and status == 204, error
        assert calls == ["hooks.internal.test"]  # one resolution, the checked one
        assert receiver.received[0]["headers"]["host"] == f"hooks.internal.test:{port}"
        sender.close()
    finally:
        receiver.close()


class _Redirector:
    """Answers every POST with 307 to `location`."""

    def __init__(self, location: str):
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(307)
                self.send_header("Location", location)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server, self.url = serve_loopback(Handler)

    def close(self):
        self.server.shutdown()


def test_redirects_are_not_followed():
    """An allowed receiver that redirects (here to another loopback port,
    standing in for an internal service) gets a failed delivery, and the
    target is never called."""
    target = Receiver()
    redirector = _Redirector(target.url)
    try:
        sender = Sender(timeout=5, allow="127.0.0.1")
        ok, status, error = sender.send(Webhook("h1", redirector.url, SECRET), event())
        assert not ok and status == 307 and "redirects are not followed" in error
        assert target.calls == 0
        sender.close()
    finally:
        redirector.close()
        target.close()


def test_notify_refuses_a_stored_internal_url_and_records_why(settings):
    """A subscription stored before the guard existed (or written to the
    database directly) is checked when notify delivers: the refusal is the
    delivery's recorded error, the receiver is never called."""
    from doclane.functions.errors import Retryable
    from doclane.functions.notify import FUNCTION as notify
    from doclane.functions.runtime import invoke

    receiver = Receiver()
    context = Context(settings)
    try:
        context.metadata.add_webhook(Webhook("legacy", receiver.url, SECRET))
        ev = event()
        with pytest.raises(Retryable, match="refused"):
            invoke(notify, ev, context)
        (delivery,) = context.metadata.deliveries(ev["id"])
        assert not delivery["ok"] and "loopback" in delivery["error"] and "DOCLANE_WEBHOOK_ALLOW" in delivery["error"]
        assert receiver.calls == 0
    finally:
        context.close()
        receiver.close()
