"""The WebSocket at /ws/progress/{batch_id}: one JSON message per change of
the batch (live.batch_progress), then a normal close when it completes.

Why a server of its own: waitress, which serves the HTTP port, hands the app
no socket to upgrade (flask-sock/simple-websocket need Werkzeug's, gunicorn's
or eventlet's), and replacing a production WSGI server for one endpoint would
cost more than it gives. So `doclane up` runs the `websockets` library's
threaded server on the next port (DOCLANE_WS_PORT), on the same host, and
this module checks the same credentials as the HTTP gate by running the
Authenticator inside a Flask request context built from the handshake:

  Authorization: Bearer <key|JWT>, X-API-Key, ?access_token=<key|JWT>
  (browsers cannot set headers on a WebSocket), or the dashboard's session
  cookie; cookies are not bound to a port, so the dashboard's login works
  here too. With the cookie the Origin must be this host (no cross-site
  WebSocket hijacking).
"""

from __future__ import annotations

import json
import logging
import re
import time
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from flask import Flask
from websockets.sync.server import Server, ServerConnection, serve

from doclane.functions import ratelimit
from doclane.functions.auth import Refused
from doclane.functions.dashboard.live import batch_progress

log = logging.getLogger("doclane.ws")
_PATH = re.compile(r"^/ws/progress/([\w-]{1,100})$")
MAX_SECONDS = 3600.0  # a batch that takes longer needs a new connection


def websocket_server(app: Flask, context, host: str, port: int) -> Server:
    """Bound and ready; run `serve_forever()` in a thread, `shutdown()` to stop."""
    auth = app.config["doclane.auth"]

    def check(connection: ServerConnection, req):
        url = urlsplit(req.path)
        if not _PATH.match(url.path):
            return connection.respond(HTTPStatus.NOT_FOUND, "use /ws/progress/{batch_id}\n")
        headers = dict(req.headers.raw_items())
        token = parse_qs(url.query).get("access_token", [None])[0]
        if token:
            headers["Authorization"] = f"Bearer {token}"
        with app.test_request_context(url.path, headers=headers):
            from flask import request

            try:
                who = auth.from_request(request)
            except Refused as exc:
                return connection.respond(HTTPStatus.UNAUTHORIZED, f"{exc}\n")
        if who is None:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "send a key (header or ?access_token=) or log in\n")
        if who.via == "session" and not _same_host(req.headers.get("Origin"), req.headers.get("Host")):
            return connection.respond(HTTPStatus.FORBIDDEN, "cross-origin WebSocket with a session cookie\n")
        wait = auth.limiter.take(who.id)
        if wait > 0:
            resp = connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "too many requests\n")
            resp.headers["Retry-After"] = ratelimit.retry_after(wait)
            return resp
        return None

    def handler(connection: ServerConnection) -> None:
        batch_id = _PATH.match(urlsplit(connection.request.path).path).group(1)
        for message in batch_progress(context, batch_id, until=time.monotonic() + MAX_SECONDS):
            if message is not None:  # heartbeats: the library's pings keep the connection checked
                connection.send(json.dumps(message, default=str))
        connection.close()

    return serve(handler, host, port, process_request=check, compression=None)


def _same_host(origin: str | None, host: str | None) -> bool:
    if not origin or not host:
        return False
    return urlsplit(origin).hostname == urlsplit(f"//{host}").hostname
