"""GET /schemas and GET /schemas/{type}: the registry, published."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from doclane.events.registry import REGISTRY

bp = Blueprint("schemas", __name__)


@bp.get("/schemas")
def list_schemas():
    return jsonify({"schemas": [
        {"type": s.type, "name": s.name, "version": s.version, "dataschema": s.dataschema,
         "description": s.description, "url": f"{request.script_root}/schemas/{s.type}"}
        for s in REGISTRY
    ]})


@bp.get("/schemas/<type_>")
def get_schema(type_: str):
    try:
        spec = REGISTRY.get(type_) if type_ in REGISTRY else REGISTRY.latest(type_)
    except KeyError as exc:
        from doclane.functions.http import problem

        return problem(404, "Unknown event type", str(exc).strip("'\""))
    resp = jsonify(spec.json_schema())
    resp.content_type = "application/schema+json"
    return resp
