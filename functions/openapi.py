"""GET /openapi.json: the OpenAPI 3.1 document of every HTTP endpoint.

Hand-written in openapi.yaml beside this module rather than generated: the
routes are plain Flask views without typed signatures to generate from, and
a written document says what the code cannot (auth, problem details, SSE).
tests/functions/test_openapi.py keeps it honest: every route of the gateway
is in it and every path in it is a route.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from flask import Blueprint, jsonify

SPEC = Path(__file__).with_name("openapi.yaml")
bp = Blueprint("openapi", __name__)


@lru_cache(maxsize=1)
def document() -> dict:
    return yaml.safe_load(SPEC.read_text(encoding="utf-8"))


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(document())
