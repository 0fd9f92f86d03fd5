"""Auth and rate limits on the gateway: keys, JWTs, the session cookie, CSRF,
admin-only routes, and the stage functions' own token. Real metadata store
(SQLite), real Flask app, the test client as the HTTP client."""

from __future__ import annotations

import re
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from doclane.functions.adapters.sql_keys import ApiKeys
from doclane.functions.context import Context
from doclane.functions.http import function_app
from doclane.functions.runtime import load
from doclane.local.gateway import create_app

ENV_KEY = "env-admin-key-for-tests"
JWT_SECRET = "a-shared-secret-of-at-least-32-bytes!!"


def make(settings, **changes):
    # webhook_allow: these tests register loopback webhooks, which the SSRF guard refuses otherwise
    context = Context(settings.model_copy(update={"api_key": ENV_KEY, "jwt_secret": JWT_SECRET,
                                                  "webhook_allow": "127.0.0.1", **changes}))
    return context, create_app(context).test_client()


@pytest.fixture
def gateway(settings):
    context, client = make(settings)
    yield context, client
    context.close()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_health_needs_no_key_and_everything_else_does(gateway):
    _, client = gateway
    assert client.get("/healthz").status_code == 200
    for path in ("/stats", "/documents", "/search?q=x", "/api", "/openapi.json", "/webhooks", "/schemas"):
        resp = client.get(path, headers={"Accept": "application/json"})
        assert resp.status_code == 401, path
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert resp.content_type == "application/problem+json"
    assert client.post("/upload").status_code == 401


def test_bad_and_revoked_keys_are_401_and_good_ones_pass(gateway):
    context, client = gateway
    assert client.get("/stats", headers=bearer("dl_00000000_nope")).status_code == 401
    assert client.get("/stats", headers={"X-API-Key": "wrong"}).status_code == 401
    rec, key = ApiKeys(context.metadata).create("alice")
    assert client.get("/stats", headers=bearer(key)).status_code == 200
    assert client.get("/stats", headers={"X-API-Key": key}).status_code == 200
    assert client.get("/stats", headers=bearer(ENV_KEY)).status_code == 200
    ApiKeys(context.metadata).revoke(rec.id)
    resp = client.get("/stats", headers=bearer(key))
    assert resp.status_code == 401 and "revoked" in resp.get_json()["detail"]


def test_over_the_rate_is_429_with_retry_after(settings):
    context, client = make(settings, rate_limit=0.5, rate_burst=3)
    _, key = ApiKeys(context.metadata).create("greedy")
    codes = [client.get("/stats", headers=bearer(key)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    resp = client.get("/stats", headers=bearer(key))
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "2"
    assert client.get("/stats", headers=bearer(ENV_KEY)).status_code == 200  # another key, another bucket
    assert client.get("/healthz").status_code == 200  # probes are never limited
    context.close()


def test_jwts_hs256_and_rs256(settings):
    context, client = make(settings)
    good = jwt.encode({"sub": "svc", "exp": int(time.time()) + 60}, JWT_SECRET, algorithm="HS256")
    assert client.get("/stats", headers=bearer(good)).status_code == 200
    expired = jwt.encode({"sub": "svc", "exp": int(time.time()) - 60}, JWT_SECRET, algorithm="HS256")
    assert "expired" in client.get("/stats", headers=bearer(expired)).get_json()["detail"]
    forged = jwt.encode({"sub": "svc", "exp": int(time.time()) + 60}, "another-secret-of-32-bytes-or-more!!", algorithm="HS256")
    assert client.get("/stats", headers=bearer(forged)).status_code == 401
    no_exp = jwt.encode({"sub": "svc"}, JWT_SECRET, algorithm="HS256")
    assert client.get("/stats", headers=bearer(no_exp)).status_code == 401
    context.close()

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    context, client = make(settings, jwt_algorithm="RS256", jwt_public_key=pem, jwt_audience="doclane")
    token = jwt.encode({"sub": "ops", "aud": "doclane", "role": "admin", "exp": int(time.time()) + 60},
                       private, algorithm="RS256")
    assert client.get("/stats", headers=bearer(token)).status_code == 200
    assert client.post("/webhooks", json={"url": "http://127.0.0.1:9/h"}, headers=bearer(token)).status_code == 201
    wrong_aud = jwt.encode({"sub": "ops", "aud": "other", "exp": int(time.time()) + 60}, private, algorithm="RS256")
    assert client.get("/stats", headers=bearer(wrong_aud)).status_code == 401
    # Only the configured algorithm is accepted: an HS256 token is refused under RS256.
    confused = jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, "k" * 32, algorithm="HS256")
    assert client.get("/stats", headers=bearer(confused)).status_code == 401
    context.close()


def test_admin_routes_refuse_user_keys(gateway):
    context, client = gateway
    _, key = ApiKeys(context.metadata).create("user")
    resp = client.post("/webhooks", json={"url": "http://127.0.0.1:9/h"}, headers=bearer(key))
    assert resp.status_code == 403
    assert client.post("/webhooks", json={"url": "http://127.0.0.1:9/h"}, headers=bearer(ENV_KEY)).status_code == 201


def test_browsers_are_sent_to_the_login_and_get_a_safe_cookie(gateway):
    context, client = gateway
    resp = client.get("/ui/stats", headers={"Accept": "text/html"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/login?next=/ui/stats"
    assert client.post("/login", data={"key": "wrong", "next": "/ui/stats"}).status_code == 401
    resp = client.post("/login", data={"key": ENV_KEY, "next": "https://evil.example/"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/"  # never off-site
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Lax" in cookie
    assert ENV_KEY not in cookie


def _login(client, key: str) -> str:
    client.post("/login", data={"key": key})
    page = client.get("/ui/failures", headers={"Accept": "text/html"}).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_cookie_requests_that_change_things_need_the_csrf_token(gateway, settings):
    context, client = gateway
    _, key = ApiKeys(context.metadata).create("eve")
    csrf = _login(client, key)
    assert client.get("/stats").status_code == 200  # reading needs no token
    assert client.post("/ui/failures/retry", data={"all": "1"}).status_code == 403
    assert client.post("/ui/failures/retry", data={"all": "1", "csrf_token": "forged"}).status_code == 403
    assert client.post("/ui/failures/retry", data={"all": "1", "csrf_token": csrf}).status_code == 302
    assert client.post("/upload", headers={"X-CSRF-Token": csrf}).status_code == 400  # through the gate, no file
    # A header key is not ambient authority: no CSRF token needed.
    assert client.post("/upload", headers=bearer(key)).status_code == 400


def test_revoking_a_key_ends_its_sessions(gateway):
    context, client = gateway
    rec, key = ApiKeys(context.metadata).create("mallory")
    _login(client, key)
    assert client.get("/stats").status_code == 200
    ApiKeys(context.metadata).revoke(rec.id)
    assert client.get("/stats").status_code == 401


def test_stage_functions_take_a_shared_token_when_configured(settings):
    context = Context(settings.model_copy(update={"function_token": "in-cluster-token"}))
    client = function_app(load("ingest"), context).test_client()
    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/x", "ce-type": "io.doclane.nope.v1",
               "content-type": "application/json"}
    assert client.post("/", headers=headers, data=b"{}").status_code == 401
    assert client.post("/", headers={**headers, **bearer("in-cluster-token")}, data=b"{}").status_code == 400
    assert client.get("/healthz").status_code == 200
    context.close()


def test_the_edge_check_answers_204_with_the_caller_and_takes_no_token(settings):
    context, client = make(settings, rate_limit=0.5, rate_burst=1)
    _, key = ApiKeys(context.metadata).create("edge")
    for _ in range(3):
        resp = client.get("/auth/check", headers=bearer(key))
        assert resp.status_code == 204 and resp.headers["X-Doclane-Role"] == "user"
    assert client.get("/auth/check").status_code == 401
    assert client.get("/stats", headers=bearer(key)).status_code == 200  # the bucket is still full
    context.close()
