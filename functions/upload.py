"""The ingest function's HTTP side: uploads land in the bucket and flow
through the notification path like a file from any other client.

  POST /upload         multipart, one or more `file` parts -> 202
  POST /batch-upload   the same, as one batch (batch.completed when all are done)
  GET  /upload-status/{document_id}
"""

from __future__ import annotations

import mimetypes
import re
import uuid

from flask import Blueprint, jsonify, request

from doclane.events.envelope import new_event
from doclane.functions import limits
from doclane.functions.common import document_id, sha256
from doclane.functions.http import ctx, problem
from doclane.functions.ports import DocumentRecord

bp = Blueprint("upload", __name__)
_UNSAFE = re.compile(r"[^\w.\- ()+,@&=]")


def safe_filename(name: str) -> str:
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip().lstrip(".")
    name = _UNSAFE.sub("_", name)[:200]
    return name or "upload"


def store_upload(context, filename: str, data: bytes, content_type: str | None, batch_id: str | None) -> dict:
    """Put one upload in the bucket and register it. Returns what the client needs."""
    filename = safe_filename(filename)
    digest = sha256(data)
    twin = context.metadata.find_by_sha256(digest)
    if twin is not None and context.settings.duplicate_policy == "skip":
        return {"document_id": twin.document_id, "filename": filename, "duplicate_of": twin.document_id,
                "status": twin.status, "status_url": f"/upload-status/{twin.document_id}"}
    key = f"uploads/{digest[:12]}/{filename}"
    content_type = content_type or mimetypes.guess_type(filename)[0]
    bucket = context.bucket.bucket
    doc_id = document_id(bucket, key)
    # Registered before the bytes land, so /upload-status answers at once;
    # ingest finds the record and carries on from it.
    context.metadata.register(DocumentRecord(
        document_id=doc_id, bucket=bucket, key=key, filename=filename, content_type=content_type,
        size=len(data), sha256=digest, status="uploaded", batch_id=batch_id,
    ))
    context.bucket.put(key, data, content_type)
    return {"document_id": doc_id, "filename": filename, "key": key, "status": "uploaded",
            "status_url": f"/upload-status/{doc_id}"}


def _files():
    """Each part is checked before anything is stored (functions/limits.py):
    its name, its size, and its content; limits.Refused says why not."""
    files = request.files.getlist("file") or request.files.getlist("files")
    settings = ctx().settings
    limit = int(settings.max_file_mb * 1024 * 1024)
    for f in files:
        name = limits.check_filename(f.filename or "upload")
        data = f.read(limit + 1)
        limits.check_file_size(len(data), settings, name)
        content_type = f.mimetype if f.mimetype != "application/octet-stream" else None
        limits.inspect(data, name, content_type, settings)
        yield name, data, content_type


def refused(exc: limits.Refused):
    """The problem-details answer to a refused upload (the dashboard's too)."""
    return problem(exc.status, exc.title, str(exc))


@bp.post("/upload")
def upload():
    context = ctx()
    try:
        files = request_files()  # all checked before the first is stored: all or nothing
    except limits.Refused as exc:
        return refused(exc)
    if not files:
        return problem(400, "No file", "send multipart/form-data with one or more 'file' parts")
    docs = [store_upload(context, name, data, ct, None) for name, data, ct in files]
    return jsonify({"documents": docs}), 202


def new_batch(context, files: list[tuple[str, bytes, str | None]]) -> dict:
    """Store the files as one batch (the dashboard's upload uses it too)."""
    batch_id = str(uuid.uuid4())
    docs = [store_upload(context, name, data, ct, batch_id) for name, data, ct in files]
    ids = list(dict.fromkeys(d["document_id"] for d in docs if "duplicate_of" not in d))
    context.metadata.add_batch(batch_id, ids)
    context.bus.publish(new_event("batch.uploaded", {"batch_id": batch_id, "document_ids": ids},
                                  subject=None, source="upload"))
    return {"batch_id": batch_id, "documents": docs}


def request_files() -> list[tuple[str, bytes, str | None]]:
    """The multipart `file` parts; limits.Refused (a ValueError) names a file
    that is refused and why."""
    return list(_files())


@bp.post("/batch-upload")
def batch_upload():
    try:
        files = request_files()
    except limits.Refused as exc:
        return refused(exc)
    if not files:
        return problem(400, "No file", "send multipart/form-data with one or more 'file' parts")
    return jsonify(new_batch(ctx(), files)), 202


@bp.get("/upload-status/<document_id>")
def upload_status(document_id: str):
    rec = ctx().metadata.get(document_id)
    if rec is None:
        return problem(404, "Unknown upload", f"no document {document_id}")
    return jsonify({"document_id": rec.document_id, "filename": rec.filename, "status": rec.status,
                    "category": rec.category, "error": rec.error, "updated_at": rec.updated_at})
