"""A minimal HTTP server on 127.0.0.1 for adapters whose real server cannot
run here (OpenSearch, Ollama): routes answer canned, documented response
shapes, and every request is recorded so a test can assert what the real
client library sent over the wire. It emulates a documented API; it is not
the real server."""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

logging.getLogger("werkzeug").setLevel(logging.ERROR)

Answer = tuple[int, Any]  # (status, JSON-able body or None)


@dataclass
class Recorded:
    method: str
    path: str
    args: dict[str, str]
    body: bytes
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def ndjson(self) -> list[Any]:
        return [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]


class FakeServer:
    """route(method, path_regex, answer) where answer is (status, body) or a
    callable(Recorded) -> (status, body); the newest matching route wins."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Answer | Callable[[Recorded], Answer]]] = []
        self.requests: list[Recorded] = []
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def route(self, method: str, path: str, answer: Answer | Callable[[Recorded], Answer]) -> None:
        self.routes.insert(0, (method, re.compile(path), answer))

    def find(self, method: str, path: str) -> list[Recorded]:
        rx = re.compile(path)
        return [r for r in self.requests if r.method == method and rx.fullmatch(r.path)]

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)

    def _app(self, environ, start_response):
        request = Request(environ)
        rec = Recorded(request.method, request.path, dict(request.args), request.get_data(), dict(request.headers))
        self.requests.append(rec)
        for method, rx, answer in self.routes:
            if method == request.method and rx.fullmatch(request.path):
                status, body = answer(rec) if callable(answer) else answer
                break
        else:
            status, body = 404, {"error": f"no fake route for {request.method} {request.path}"}
        payload = b"" if body is None or request.method == "HEAD" else json.dumps(body).encode()
        return Response(payload, status=status, content_type="application/json")(environ, start_response)
