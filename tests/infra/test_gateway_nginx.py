"""infra/gateway/nginx.conf in front of the real gateway app: nginx checks
credentials with auth_request against /auth/check and limits the rate per
caller. TLS is swapped for plain HTTP on loopback, nothing else changes."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from waitress.server import create_server

from doclane.functions.adapters.sql_keys import ApiKeys
from doclane.functions.context import Context
from doclane.local.gateway import create_app
from tests.conftest import require
from tests.e2e.harness import free_port

CONF = Path(__file__).parents[2] / "infra" / "gateway" / "nginx.conf"


def _local_conf(text: str, port: int, upstream: int, prefix: Path) -> str:
    text = re.sub(r"listen 443 ssl http2;.*\n", f"listen 127.0.0.1:{port};\n", text)
    text = re.sub(r"\s*ssl_certificate(_key)? .*;", "", text)
    text = text[:text.rindex("    server {\n        listen 80;")] + "}\n"  # drop the TLS redirect
    text = text.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream};")
    # A slow rate, so a busy test machine cannot refill the bucket between requests.
    text = text.replace("rate=20r/s", "rate=1r/m").replace("burst=100 nodelay", "burst=5 nodelay")
    return text.replace("worker_processes auto;", f"worker_processes 1;\nerror_log {prefix}/error.log;\n")


@pytest.fixture
def edge(settings, tmp_path):
    nginx = shutil.which("nginx") or (Path("/usr/sbin/nginx") if Path("/usr/sbin/nginx").exists() else None)
    require(nginx is not None, "nginx is not installed (apt-get install nginx-light) to test infra/gateway/nginx.conf")
    context = Context(settings.model_copy(update={"api_key": "edge-admin"}))
    server = create_server(create_app(context), host="127.0.0.1", port=0, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(_local_conf(CONF.read_text(), port, int(server.effective_port), tmp_path))
    proc = subprocess.Popen([str(nginx), "-p", str(tmp_path), "-c", str(conf), "-e", "stderr",
                             "-g", f"daemon off; pid {tmp_path}/nginx.pid;"], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(50):
        try:
            httpx.get(url + "/healthz", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    yield context, url
    proc.terminate()
    proc.wait(10)
    server.close()
    context.close()


def test_the_edge_authenticates_and_limits_the_rate(edge):
    context, url = edge
    _, key = ApiKeys(context.metadata).create("edge-user")
    assert httpx.get(url + "/healthz").status_code == 200
    assert httpx.get(url + "/stats", headers={"X-API-Key": key}).status_code == 200
    refused = httpx.get(url + "/stats")
    assert refused.status_code == 401 and refused.headers["content-type"] == "application/problem+json"
    html = httpx.get(url + "/stats", headers={"Accept": "text/html"})
    assert html.status_code == 302 and html.headers["location"].endswith("/login?next=/stats"), html.headers
    assert httpx.get(url + "/stats", headers={"X-API-Key": "wrong"}).status_code == 401
    assert httpx.get(url + "/login").status_code == 200
    assert httpx.post(url + "/functions/ingest", headers={"X-API-Key": key}).status_code == 404
    with httpx.Client(headers={"Authorization": "Bearer edge-admin"}) as client:
        codes = [client.get(url + "/auth/check").status_code for _ in range(8)]
    assert codes == [204] * 6 + [429] * 2  # the first, then a burst of 5
    last = httpx.get(url + "/auth/check", headers={"Authorization": "Bearer edge-admin"})
    assert last.headers["Retry-After"] == "1"
