"""Subscriptions to pipeline events: webhooks (http/https URLs, signed per
Standard Webhooks, functions/webhooks.py) and e-mail (mailto: URLs,
functions/mailer.py). One model (ports.Webhook), one table, one API
(/webhooks) and one delivery log, so filters, exactly-once delivery and
retries work the same for both; only the sending differs.

A subscription may filter by event type (short names, e.g.
"document.indexed") and by document category; an empty filter takes all.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable, Sequence

from doclane.events.registry import REGISTRY
from doclane.functions import mailer
from doclane.functions.ports import Webhook
from doclane.functions.webhooks import new_webhook


class BadSubscription(ValueError):
    """A subscription request that cannot be accepted; `title` is the problem's title."""

    def __init__(self, title: str, detail: str):
        super().__init__(detail)
        self.title = title


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise BadSubscription(f"Bad {name}", f"{name} must be a list of strings")
    return tuple(dict.fromkeys(v.strip() for v in value if v.strip()))


def from_body(body: Any, *, categories: Sequence[str], allow: Any = None) -> Webhook:
    """A subscription from the JSON of POST /webhooks:

      {"url": "https://...", "event_types": [...], "categories": [...], "secret": "whsec_..."}
      {"url": "mailto:ops@example.com,ap@example.com", ...}
      {"type": "email", "recipients": ["ops@example.com"], ...}

    `allow` is what webhooks.new_webhook checks webhook URLs against
    (DOCLANE_WEBHOOK_ALLOW)."""
    if not isinstance(body, dict):
        raise BadSubscription("Bad body", 'send JSON like {"url": "https://...", "event_types": ["document.indexed"]}')
    types = _strings(body.get("event_types"), "event_types")
    known = {s.name for s in REGISTRY}
    unknown = [t for t in types if t not in known]
    if unknown:
        raise BadSubscription("Unknown event type", f"{', '.join(unknown)}; known: {', '.join(sorted(known))}")
    cats = _strings(body.get("categories"), "categories")
    unknown = [c for c in cats if c not in categories]
    if unknown:
        raise BadSubscription("Unknown category", f"{', '.join(unknown)}; known: {', '.join(categories)}")
    kind = body.get("type")
    url = str(body.get("url") or "")
    if kind not in (None, "webhook", "email"):
        raise BadSubscription("Bad type", f"type must be webhook or email, not {kind!r}")
    if kind == "email" or (kind is None and url.lower().startswith("mailto:")):
        to = _strings(body.get("recipients"), "recipients") if kind == "email" and not url else url
        try:
            return mailer.email_subscription(to, types, cats)
        except ValueError as exc:
            raise BadSubscription("Bad recipients", str(exc)) from None
    try:
        hook = new_webhook(url, types, body.get("secret"), allow=allow)
    except ValueError as exc:  # not http(s), or refused by functions/urlguard.py
        raise BadSubscription("Bad URL", str(exc)) from None
    return replace(hook, categories=cats)


def from_url(url: str, secret: str | None = None, *, allow: Any = None) -> Webhook:
    """A subscription to every event from a URL alone (`doclane up --webhook`,
    DOCLANE_WEBHOOK_URLS): mailto: for e-mail, else a webhook."""
    if url.lower().startswith("mailto:"):
        return mailer.email_subscription(url)
    return new_webhook(url, (), secret, allow=allow)


def wants(sub: Webhook, event_name: str, category: str | None) -> bool:
    """Does the subscription take this event (short name) of a document of
    this category? A category filter never matches an event without one
    (batch.completed)."""
    if sub.event_types and event_name not in sub.event_types:
        return False
    if sub.kind == "email" and event_name not in mailer.EMAIL_EVENTS:
        return False
    return not sub.categories or category in sub.categories


def view(sub: Webhook, *, secret: bool = False) -> dict[str, Any]:
    """The API's shape of a subscription; the signing secret only when asked
    (the answer to its creation), else shortened."""
    out: dict[str, Any] = {"id": sub.id, "type": sub.kind, "url": sub.url, "event_types": list(sub.event_types),
                           "categories": list(sub.categories)}
    if sub.kind == "email":
        out["recipients"] = mailer.recipients(sub.url)
    else:
        out["secret"] = sub.secret if secret else sub.secret[:10] + "…"
    return out


def delivery_log(attempts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Attempts (MetadataStore.deliveries rows, in order) folded per
    subscription and event: outcome (delivered, failed for good, or retrying
    while the bus still has attempts left), attempts, last error."""
    log: dict[tuple[str, str], dict[str, Any]] = {}
    for a in attempts:
        entry = log.setdefault((a["webhook_id"], a["event_id"]), {
            "subscription_id": a["webhook_id"], "event_id": a["event_id"], "outcome": "retrying", "attempts": 0,
            "status": None, "last_error": None, "first_at": a["at"], "last_at": a["at"]})
        entry["attempts"] += 1
        entry["status"], entry["last_at"] = a["status"], a["at"]
        if a.get("error"):
            entry["last_error"] = a["error"]
        if a["ok"]:
            entry["outcome"] = "delivered"
        elif a.get("permanent") and entry["outcome"] != "delivered":
            entry["outcome"] = "failed"
    return list(log.values())
