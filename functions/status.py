"""The metadata service over HTTP: documents, their status and history,
corrections, and counts.

  GET /documents?status=&limit=&offset=
  GET /documents/{id}            status, category, fields, event history
  GET /documents/{id}/metadata   category and fields
  PUT /documents/{id}/metadata   correct them (validated against the category's schema)
  GET /documents/{id}/content    the original bytes
  GET /stats                     counts by status and category (+ queues)
"""

from __future__ import annotations

import io
from dataclasses import asdict

import jsonschema
from flask import Blueprint, Response, jsonify, request, send_file

from doclane.events.envelope import new_event
from doclane.functions.common import load_parsed, parsed_key
from doclane.functions.errors import NotFound
from doclane.functions.http import ctx, problem

bp = Blueprint("status", __name__)


def document_view(context, document_id: str) -> dict | None:
    rec = context.metadata.get(document_id)
    if rec is None:
        return None
    view = asdict(rec)
    view["events"] = context.metadata.history(document_id)
    view["deliveries"] = [d for e in view["events"] for d in context.metadata.deliveries(e["id"])]
    return view


@bp.get("/documents")
def list_documents():
    try:
        limit = min(int(request.args.get("limit", 50)), 500)
        offset = max(int(request.args.get("offset", 0)), 0)
    except ValueError:
        return problem(400, "Bad paging", "limit and offset must be whole numbers")
    try:
        recs = ctx().metadata.list(status=request.args.get("status") or None, limit=limit, offset=offset)
    except ValueError as exc:  # the store's InvalidChange: an unknown status or a negative limit
        return problem(400, "Bad query", str(exc))
    return jsonify({"documents": [asdict(r) for r in recs]})


@bp.get("/documents/<document_id>")
def get_document(document_id: str):
    view = document_view(ctx(), document_id)
    if view is None:
        return problem(404, "No such document", f"no document {document_id}")
    return jsonify(view)


@bp.get("/documents/<document_id>/metadata")
def get_metadata(document_id: str):
    rec = ctx().metadata.get(document_id)
    if rec is None:
        return problem(404, "No such document", f"no document {document_id}")
    return jsonify({"document_id": rec.document_id, "category": rec.category,
                    "category_confidence": rec.category_confidence, "fields": rec.fields})


@bp.put("/documents/<document_id>/metadata")
def put_metadata(document_id: str):
    return correct(ctx(), document_id, request.get_json(silent=True))


@bp.get("/documents/<document_id>/content")
def get_content(document_id: str):
    """The original bytes, as uploaded (the dashboard's download link)."""
    context = ctx()
    rec = context.metadata.get(document_id)
    if rec is None:
        return problem(404, "No such document", f"no document {document_id}")
    try:
        data = context.objects(rec.bucket).get(rec.key)
    except NotFound:
        return problem(410, "Original gone", f"{rec.bucket}/{rec.key} is no longer in the bucket")
    return send_file(io.BytesIO(data), mimetype=rec.content_type or "application/octet-stream",
                     as_attachment=True, download_name=rec.filename)


def correct(context, document_id: str, body) -> Response | tuple[Response, int]:
    """Correct category and/or fields (the PUT above, and the dashboard's form)."""
    rec = context.metadata.get(document_id)
    if rec is None:
        return problem(404, "No such document", f"no document {document_id}")
    if not isinstance(body, dict) or not ({"category", "fields"} & body.keys()):
        return problem(400, "Bad body", 'send JSON like {"category": "invoice", "fields": {"total": "12.50"}}')
    category = body.get("category", rec.category) or "other"
    try:
        spec = context.categories.get(category)
    except KeyError as exc:
        return problem(422, "Unknown category", str(exc).strip("'\""))
    new_values = body.get("fields")
    if new_values is not None:
        if not isinstance(new_values, dict):
            return problem(422, "Bad fields", "fields must be an object of name: value")
        schema = {**spec.json_schema(), "required": []}
        try:
            jsonschema.validate(new_values, schema, format_checker=jsonschema.FormatChecker())
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "fields"
            return problem(422, "Invalid fields", f"{where}: {exc.message}")

    changed_category = category != rec.category
    if changed_category or new_values is None:
        text = _text(context, rec)
        if changed_category and text:
            context.classifier.learn(text, category)
    if new_values is None:
        # A new category and no fields given: extract again for the new
        # category (the pipeline re-runs extract and index).
        context.metadata.update(document_id, category=category, category_confidence=1.0)
        event = new_event("document.classified", {
            "document_id": document_id, "filename": rec.filename, "category": category, "confidence": 1.0,
            "classifier": "user", "parsed_key": parsed_key(document_id, rec.sha256), "batch_id": rec.batch_id,
        }, subject=document_id, source="metadata")
        context.metadata.record_event(event, stage="metadata")
        context.bus.publish(event)
        return jsonify({"document_id": document_id, "category": category, "reprocessing": True}), 202

    fields = {} if changed_category else dict(rec.fields or {})
    fields.update({k: {"value": v, "confidence": 1.0, "raw": None, "source": "user"} for k, v in new_values.items()})
    context.metadata.update(document_id, category=category, category_confidence=1.0, fields=fields)
    try:
        context.index.update_fields(document_id, category, fields)
    except NotFound:
        pass  # not indexed yet: the index stage will take the corrected fields from metadata
    event = new_event("document.corrected", {
        "document_id": document_id, "category": category, "previous_category": rec.category,
        "fields": {k: {"value": v["value"], "confidence": 1.0} for k, v in fields.items()},
    }, subject=document_id, source="metadata")
    context.metadata.record_event(event, stage="metadata")
    return jsonify({"document_id": document_id, "category": category, "fields": fields})


def _text(context, rec) -> str:
    try:
        return load_parsed(context, parsed_key(rec.document_id, rec.sha256)).text
    except NotFound:
        return ""


@bp.get("/stats")
def stats():
    context = ctx()
    out = context.metadata.stats()
    counts = getattr(context.bus, "counts", None)
    if counts:
        out["queues"] = counts()
    return jsonify(out)
