"""Subscriptions (webhooks and e-mail) and reprocessing over HTTP.

  GET    /webhooks
  POST   /webhooks {"url": ..., "event_types": ["document.indexed", ...], "categories": [...]}
                   -> 201 (a webhook's answer holds its secret); "mailto:a@x,b@y" or
                   {"type": "email", "recipients": [...]} subscribes e-mail
  DELETE /webhooks/{id}
  GET    /webhooks/{id}/deliveries   the delivery log: per event, outcome, attempts, last error
  POST   /reprocess {"document_ids": [...], "status": ..., "category": ..., "since": ..., "until": ...,
                     "dead_letters": "classify" | true, "dry_run": true}
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from doclane.functions import reprocess as replay
from doclane.functions import subscriptions
from doclane.functions.http import ctx, problem

bp = Blueprint("webhooks", __name__)


@bp.get("/webhooks")
def list_webhooks():
    return jsonify({"webhooks": [subscriptions.view(h) for h in ctx().metadata.webhooks()]})


@bp.post("/webhooks")
def add_webhook():
    context = ctx()
    try:
        sub = subscriptions.from_body(request.get_json(silent=True) or {}, categories=context.categories.names,
                                      allow=context.settings.webhook_allow)
    except subscriptions.BadSubscription as exc:
        return problem(422, exc.title, str(exc))
    context.metadata.add_webhook(sub)
    return jsonify(subscriptions.view(sub, secret=True)), 201


@bp.get("/webhooks/<hook_id>/deliveries")
def webhook_deliveries(hook_id: str):
    context = ctx()
    if hook_id not in {h.id for h in context.metadata.webhooks()} and not context.metadata.deliveries(webhook_id=hook_id):
        return problem(404, "No such subscription", f"no subscription {hook_id} and no deliveries to it")
    return jsonify({"subscription_id": hook_id,
                    "deliveries": subscriptions.delivery_log(context.metadata.deliveries(webhook_id=hook_id))})


@bp.post("/reprocess")
def reprocess_documents():
    """The selectors of `doclane reprocess`, as JSON; admins only (auth.py)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return problem(400, "Bad body", 'send JSON like {"status": "failed", "dry_run": true}')
    try:
        selection = replay.Selection.from_json(body)
        dry_run = bool(body.get("dry_run", False))
        result = replay.run(ctx(), selection, dry_run=dry_run)
    except ValueError as exc:
        return problem(422, "Bad selection", str(exc))
    return jsonify(result.to_json()), 200 if dry_run else 202


@bp.delete("/webhooks/<hook_id>")
def delete_webhook(hook_id: str):
    ctx().metadata.remove_webhook(hook_id)
    return "", 204
