"""The HTTP API against its own description: schemathesis (pinned in
pyproject's dev extra) reads the OpenAPI document the gateway serves at
/openapi.json and sends generated requests, valid and invalid, to every
operation of the real app (in process, over WSGI: no port, no flakiness from
a server starting). Each answer must be no 5xx, have a documented status
code and content type, and match its documented schema (problem+json for
errors).

Bounded and stable for CI: at most MAX_EXAMPLES generated cases per
operation (plus schemathesis's examples and boundary-coverage cases),
derandomized, no example database, no stateful phase. The Server-Sent
Events streams (/ui/live/*) are left out: each holds its answer open for
30 s by design (tests/functions/dashboard covers them).
"""

from __future__ import annotations

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from doclane.functions.context import Context
from doclane.functions.openapi import document
from doclane.local.gateway import create_app

KEY = "schemathesis-admin-key"  # DOCLANE_API_KEY: an admin, so admin-only operations are exercised too
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_EXAMPLES = 10
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
CONFIG = schemathesis.Config.from_dict({
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    "phases": {"stateful": {"enabled": False}},
    "headers": AUTH,
})

# The document the gateway serves (the test below checks it is this one).
schema = schemathesis.openapi.from_dict(document(), config=CONFIG).exclude(path_regex=r"^/ui/live/")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """The gateway on embedded defaults in a fresh data dir; MinIO's webhook
    token is the API key, so that endpoint is exercised past its 401; the
    rate limit is out of the way (its 429 is tested in test_auth)."""
    from doclane.functions.settings import load

    root = tmp_path_factory.mktemp("schemathesis")
    settings = load(data_dir=root / "data", inbox=root / "inbox", api_key=KEY, minio_webhook_token=KEY,
                    rate_limit=1e6, rate_burst=1_000_000)
    context = Context(settings)
    app = create_app(context)
    served = app.test_client().get("/openapi.json", headers=AUTH)
    assert served.status_code == 200 and served.json == document()
    yield app
    context.close()


@schema.parametrize()
def test_the_api_keeps_its_openapi_contract(case, api):
    case.call_and_validate(app=api, headers=AUTH, checks=CHECKS)
