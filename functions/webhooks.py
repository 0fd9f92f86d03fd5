"""Webhook delivery per the Standard Webhooks spec: the body is the
CloudEvent in structured JSON; `webhook-id` is the event id (the receiver's
idempotency key), `webhook-timestamp` the send time, `webhook-signature`
an HMAC-SHA256 made by the `standardwebhooks` package.

Every URL passes functions/urlguard.py when it is registered and again right
before each delivery (no internal addresses unless DOCLANE_WEBHOOK_ALLOW
lists them); the request goes to the address that was checked, and a
redirect is not followed (it counts as a failed delivery)."""

from __future__ import annotations

import base64
import os
import uuid
from datetime import datetime, timezone

import httpx
from cloudevents.http import CloudEvent
from standardwebhooks.webhooks import Webhook as Signer

from doclane.events import codec
from doclane.functions import urlguard
from doclane.functions.observability import metrics
from doclane.functions.ports import Webhook

USER_AGENT = "doclane-webhooks/1"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def new_webhook(url: str, event_types: tuple[str, ...] = (), secret: str | None = None, *,
                allow: urlguard.AllowList | str | None = None) -> Webhook:
    """A subscription to `url`; urlguard.UnsafeUrl (a ValueError) says why
    the URL is refused. `allow` is DOCLANE_WEBHOOK_ALLOW (none: public hosts only)."""
    urlguard.check(url, allow)
    if secret and not _usable_secret(secret):
        raise ValueError("the webhook secret must be a Standard Webhooks secret: whsec_<base64>")
    return Webhook(id=str(uuid.uuid5(uuid.NAMESPACE_URL, url)), url=url, secret=secret or new_secret(),
                   event_types=tuple(event_types))


def _usable_secret(secret: object) -> bool:
    """A secret the signer takes; checked at registration, so that a bad one
    is not found out by every delivery failing."""
    if not isinstance(secret, str):
        return False
    try:
        Signer(secret)
    except Exception:  # noqa: BLE001 - the package raises several types (binascii.Error, its own)
        return False
    return True


def signed_request(hook: Webhook, event: CloudEvent, now: datetime | None = None) -> tuple[dict[str, str], bytes]:
    body = codec.dumps(event)
    now = now or datetime.now(timezone.utc)
    signature = Signer(hook.secret).sign(event["id"], now, body.decode())
    headers = {
        "content-type": "application/cloudevents+json",
        "user-agent": USER_AGENT,
        "webhook-id": event["id"],
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    return headers, body


class Sender:
    def __init__(self, timeout: float = 10.0, allow: urlguard.AllowList | str | None = None,
                 resolve: urlguard.Resolver = urlguard.system_resolver):
        self.client = httpx.Client(timeout=timeout, follow_redirects=False)
        self.allow = allow if isinstance(allow, urlguard.AllowList) else urlguard.AllowList.parse(allow)
        self.resolve = resolve

    def send(self, hook: Webhook, event: CloudEvent) -> tuple[bool, int | None, str | None]:
        ok, status, error = self._send(hook, event)
        # delivered (2xx), refused (another status), unreachable (no answer), blocked (unsafe URL)
        metrics.webhook_delivered("delivered" if ok else "refused" if status is not None
                                  else "blocked" if (error or "").startswith("refused:") else "unreachable")
        return ok, status, error

    def _send(self, hook: Webhook, event: CloudEvent) -> tuple[bool, int | None, str | None]:
        try:  # again now: the name may point elsewhere than at registration
            target = urlguard.check(hook.url, self.allow, resolve=self.resolve)
        except urlguard.UnsafeUrl as exc:
            return False, None, f"refused: {exc}"
        headers, body = signed_request(hook, event)
        url, host, extensions = urlguard.pinned_request(target)
        try:
            response = self.client.post(url, content=body, headers={**headers, **host}, extensions=extensions)
        except httpx.HTTPError as exc:
            return False, None, f"{type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return True, response.status_code, None
        if response.is_redirect:
            return False, response.status_code, (f"HTTP {response.status_code}: redirects are not followed "
                                                  f"(register {response.headers.get('location', 'the new URL')!r})")
        return False, response.status_code, f"HTTP {response.status_code}"

    def close(self) -> None:
        self.client.close()
