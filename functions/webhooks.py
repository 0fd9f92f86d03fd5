"""Webhook delivery per the Standard Webhooks spec: the body is the
CloudEvent in structured JSON; `webhook-id` is the event id (the receiver's
idempotency key), `webhook-timestamp` the send time, `webhook-signature`
an HMAC-SHA256 made by the `standardwebhooks` package."""

from __future__ import annotations

import base64
import os
import uuid
from datetime import datetime, timezone

import httpx
from cloudevents.http import CloudEvent
from standardwebhooks.webhooks import Webhook as Signer

from doclane.events import codec
from doclane.functions.ports import Webhook

USER_AGENT = "doclane-webhooks/1"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def new_webhook(url: str, event_types: tuple[str, ...] = (), secret: str | None = None) -> Webhook:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"webhook URL {url!r} must start with http:// or https://")
    return Webhook(id=str(uuid.uuid5(uuid.NAMESPACE_URL, url)), url=url, secret=secret or new_secret(),
                   event_types=tuple(event_types))


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
    def __init__(self, timeout: float = 10.0):
        self.client = httpx.Client(timeout=timeout, follow_redirects=False)

    def send(self, hook: Webhook, event: CloudEvent) -> tuple[bool, int | None, str | None]:
        headers, body = signed_request(hook, event)
        try:
            response = self.client.post(hook.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return False, None, f"{type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return True, response.status_code, None
        return False, response.status_code, f"HTTP {response.status_code}"

    def close(self) -> None:
        self.client.close()
