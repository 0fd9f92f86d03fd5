"""Webhook subscriptions over HTTP.

  GET    /webhooks
  POST   /webhooks {"url": ..., "event_types": ["document.indexed", ...]} -> 201 with the secret
  DELETE /webhooks/{id}
"""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, jsonify, request

from doclane.events.registry import REGISTRY
from doclane.functions.http import ctx, problem
from doclane.functions.webhooks import new_webhook

bp = Blueprint("webhooks", __name__)


@bp.get("/webhooks")
def list_webhooks():
    return jsonify({"webhooks": [{**asdict(h), "secret": h.secret[:10] + "…"} for h in ctx().metadata.webhooks()]})


@bp.post("/webhooks")
def add_webhook():
    body = request.get_json(silent=True) or {}
    url = body.get("url")
    types = tuple(body.get("event_types") or ())
    known = {s.name for s in REGISTRY}
    unknown = [t for t in types if t not in known]
    if unknown:
        return problem(422, "Unknown event type", f"{', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        hook = new_webhook(str(url or ""), types, body.get("secret"))
    except ValueError as exc:
        return problem(422, "Bad URL", str(exc))
    ctx().metadata.add_webhook(hook)
    return jsonify(asdict(hook)), 201


@bp.delete("/webhooks/<hook_id>")
def delete_webhook(hook_id: str):
    ctx().metadata.remove_webhook(hook_id)
    return "", 204
