"""Who may call the HTTP API and the dashboard, and how often.

Every request but health, the login page and static files must carry one of:

  Authorization: Bearer <api key or JWT>   or   X-API-Key: <api key>
  the dashboard's session cookie (set by POST /login)

API keys are checked against the hashed keys in the metadata store
(`doclane keys create`), and DOCLANE_API_KEY is an admin key from the
environment. JWTs are verified with PyJWT: HS256 with DOCLANE_JWT_SECRET or
RS256 with DOCLANE_JWT_PUBLIC_KEY; `sub` names the caller, `role` may say admin.

A request authenticated by the cookie and changing something (POST, PUT,
DELETE) must also carry the session's CSRF token (form field `csrf_token` or
header X-CSRF-Token): the cookie is sent by the browser on its own, a header
key is not, so only cookie requests can be forged cross-site.

Each caller has a token bucket (functions/ratelimit.py); an empty bucket is
429 with Retry-After.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import jwt
from flask import Blueprint, Flask, Request, g, redirect, request, session

from doclane.functions import ratelimit
from doclane.functions.adapters.sql_keys import ApiKeys, hash_key
from doclane.functions.http import problem

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Endpoints anyone may call: probes, the login form and the CSS/JS it needs,
# and MinIO's webhook, which checks its own token (DOCLANE_MINIO_WEBHOOK_TOKEN).
PUBLIC_ENDPOINTS = frozenset({"health.healthz", "health.of_health", "dashboard.login", "dashboard.static", "static",
                              "minio_webhook.minio_webhook"})
# Endpoints that change the system for everyone or inject events: admins only.
ADMIN_ENDPOINTS = frozenset({"webhooks.add_webhook", "webhooks.delete_webhook", "webhooks.reprocess_documents",
                             "function_endpoint", "deadletter.dead_letter"})
ENV_KEY_ID = "env"
# An edge proxy's per-request check (nginx auth_request): the proxy limits the
# rate itself, so this call must not take a second token from the bucket.
UNLIMITED_ENDPOINTS = frozenset({"auth.check"})
bp = Blueprint("auth", __name__)


@dataclass(frozen=True)
class Principal:
    id: str  # the rate-limit bucket: a key id, "env", or "jwt:<sub>"
    name: str
    role: str
    via: str  # "key", "jwt" or "session"

    @property
    def admin(self) -> bool:
        return self.role == "admin"


class Refused(Exception):
    """Credentials were sent but are not valid: always 401, with the reason."""


class Authenticator:
    def __init__(self, context):
        self.settings = context.settings
        self.keys = ApiKeys(context.metadata)
        self.limiter = ratelimit.from_settings(context.settings)

    # ---------------------------------------------------------------- credentials
    def from_token(self, token: str) -> Principal:
        token = token.strip()
        if token.count(".") == 2:
            return self._jwt(token)
        env_key = self.settings.api_key
        if env_key and hmac.compare_digest(token.encode(), env_key.encode()):
            return Principal(ENV_KEY_ID, "DOCLANE_API_KEY", "admin", "key")
        rec = self.keys.verify(token)
        if rec is None:
            raise Refused("unknown or revoked API key")
        self.keys.touch(rec.id)
        return Principal(rec.id, rec.name, rec.role, "key")

    def _jwt(self, token: str) -> Principal:
        s = self.settings
        key = s.jwt_secret if s.jwt_algorithm == "HS256" else _pem(s.jwt_public_key)
        if not key:
            raise Refused(f"JWTs are not accepted here: set DOCLANE_JWT_{'SECRET' if s.jwt_algorithm == 'HS256' else 'PUBLIC_KEY'}")
        try:
            claims = jwt.decode(token, key, algorithms=[s.jwt_algorithm], audience=s.jwt_audience,
                                issuer=s.jwt_issuer, options={"require": ["exp", "sub"]})
        except jwt.PyJWTError as exc:
            raise Refused(f"invalid JWT: {exc}") from None
        role = "admin" if claims.get("role") == "admin" else "user"
        return Principal(f"jwt:{claims['sub']}", str(claims["sub"]), role, "jwt")

    def from_request(self, req: Request) -> Principal | None:
        """The caller, None if no credentials were sent; Refused if they are bad."""
        header = req.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            return self.from_token(header[7:])
        if req.headers.get("X-API-Key"):
            return self.from_token(req.headers["X-API-Key"])
        return self.from_session()

    # ---------------------------------------------------------------- session
    def login(self, token: str) -> Principal:
        """Check the credentials and remember the caller in the session cookie.
        The cookie holds the key's id, never the key; each request re-checks
        that the key was not revoked since."""
        who = self.from_token(token)
        session.clear()
        session.permanent = True
        session.update(pid=who.id, name=who.name, role=who.role, csrf=secrets.token_urlsafe(24))
        if who.id == ENV_KEY_ID:  # a new DOCLANE_API_KEY ends the sessions opened with the old one
            session["env"] = hash_key(self.settings.api_key or "")[:16]
        return who

    def from_session(self) -> Principal | None:
        pid = session.get("pid")
        if not pid:
            return None
        if pid == ENV_KEY_ID:
            if not self.settings.api_key or session.get("env") != hash_key(self.settings.api_key)[:16]:
                return None
        elif not pid.startswith("jwt:"):
            rec = self.keys.get(pid)
            if rec is None or not rec.active:
                return None
        return Principal(pid, session.get("name", pid), session.get("role", "user"), "session")

    # ---------------------------------------------------------------- the gate
    def check(self) -> object | None:
        """Flask before_request: None lets the request through, else the answer."""
        if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
            return None  # unknown routes fall through to the 404 handler
        try:
            who = self.from_request(request)
        except Refused as exc:
            return _unauthorized(str(exc))
        if who is None:
            if _wants_html():
                return redirect(f"/login?next={quote(request.full_path.rstrip('?'))}")
            return _unauthorized("send Authorization: Bearer <key>, X-API-Key: <key>, or log in at /login")
        wait = 0.0 if request.endpoint in UNLIMITED_ENDPOINTS else self.limiter.take(who.id)
        if wait > 0:
            resp = problem(429, "Too many requests",
                           f"{who.name} is over {self.settings.rate_limit:g} requests/s; retry later")
            resp.headers["Retry-After"] = ratelimit.retry_after(wait)
            return resp
        if who.via == "session" and request.method not in SAFE_METHODS:
            sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
            if not hmac.compare_digest(sent.encode(), session.get("csrf", "").encode()):
                return problem(403, "CSRF check failed", "reload the page and try again")
        if request.endpoint in ADMIN_ENDPOINTS and not who.admin:
            return problem(403, "Admins only", f"{request.method} {request.path} needs an admin key")
        g.principal = who
        return None


@bp.get("/auth/check")
def check():
    """204 when the credentials are good (the gate let the request through):
    for nginx's auth_request at the edge (infra/gateway/). Says who it is."""
    who = g.principal
    return "", 204, {"X-Doclane-Principal": who.id, "X-Doclane-Role": who.role}


def install(app: Flask, context, secret: str) -> Authenticator:
    """Put the gate in front of every route of `app` and configure its cookie."""
    auth = Authenticator(context)
    app.secret_key = secret
    app.config.update(SESSION_COOKIE_NAME="doclane_session", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SECURE=context.settings.session_secure, SESSION_COOKIE_SAMESITE="Lax",
                      PERMANENT_SESSION_LIFETIME=12 * 3600)
    app.config["doclane.auth"] = auth
    app.before_request(auth.check)
    app.register_blueprint(bp)
    return auth


def _unauthorized(detail: str):
    resp = problem(401, "Unauthorized", detail)
    resp.headers["WWW-Authenticate"] = 'Bearer realm="doclane"'
    return resp


def _wants_html() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return request.method == "GET" and best == "text/html" and "text/html" in request.accept_mimetypes


def _pem(value: str | None) -> str | None:
    """RS256 public key: PEM text, or the path of a PEM file."""
    if not value or "-----BEGIN" in value:
        return value
    path = Path(value)
    return path.read_text() if path.is_file() else value
