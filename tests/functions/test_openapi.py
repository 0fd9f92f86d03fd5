"""/openapi.json is a valid OpenAPI document that lists every route of the
gateway, and only those."""

from __future__ import annotations

import re

from openapi_spec_validator import validate

from doclane.functions.context import Context
from doclane.functions.openapi import document
from doclane.local.gateway import create_app


def _routes(app) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", str(rule.rule))
        out |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    return out


def _documented(spec: dict) -> set[tuple[str, str]]:
    verbs = {"get", "put", "post", "delete", "patch"}
    return {(path, verb) for path, item in spec["paths"].items() for verb in item if verb in verbs}


def test_the_document_is_valid_openapi():
    validate(document())


def test_every_route_is_documented_and_every_documented_path_is_a_route(settings):
    context = Context(settings.model_copy(update={"api_key": "k"}))
    app = create_app(context)
    routes, documented = _routes(app), _documented(document())
    assert routes - documented == set(), "routes missing from functions/openapi.yaml"
    assert documented - routes == set(), "functions/openapi.yaml documents routes that do not exist"
    client = app.test_client()
    served = client.get("/openapi.json", headers={"Authorization": "Bearer k"}).get_json()
    assert served["openapi"].startswith("3.") and served["paths"].keys() == document()["paths"].keys()
    context.close()
