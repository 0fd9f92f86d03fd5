"""Run `doclane up` as a user would (a real process with its function
processes), and a webhook receiver that checks Standard Webhooks signatures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import httpx
from standardwebhooks.webhooks import Webhook

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# Every endpoint but health needs a key: the harness runs doclane with this
# admin key in DOCLANE_API_KEY and sends it (AUTH) with every request.
API_KEY = "e2e-admin-" + "3c1f0a9d5b7e4c2a8f6d"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def serve_loopback(handler: type[BaseHTTPRequestHandler], path: str = "/hook") -> tuple[ThreadingHTTPServer, str]:
    """A threaded HTTP server for `handler` on a free loopback port, serving in
    the background; returns it (shutdown() and server_close() to stop) and its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}{path}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A webhook endpoint on loopback. `fail_first` makes it answer 500 to the
    first N deliveries, to exercise retries. `fault`, called per delivery,
    may return (status, delay): wait `delay` seconds (a hang), then answer
    `status` without taking the delivery; None answers normally."""

    def __init__(self, secret: str = SECRET, fail_first: int = 0,
                 fault: Callable[[], tuple[int, float] | None] | None = None):
        self.secret = secret
        self.received: list[dict] = []
        self.rejected: list[str] = []
        self.faulted: list[dict] = []  # the deliveries `fault` answered: status, delay, webhook-id
        self.fail_first = fail_first
        self.fault = fault
        self.calls = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.calls += 1
                if receiver.calls <= receiver.fail_first:
                    self.send_response(500)
                    self.end_headers()
                    return
                fault = receiver.fault() if receiver.fault else None
                if fault is not None:
                    status, delay = fault
                    receiver.faulted.append({"status": status, "delay": delay,
                                             "webhook-id": self.headers.get("webhook-id")})
                    time.sleep(delay)
                    try:
                        self.send_response(status)
                        self.end_headers()
                    except OSError:  # the sender stopped waiting and closed the connection
                        pass
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body, headers)
                except Exception as exc:  # a bad signature is recorded, and answered 401
                    receiver.rejected.append(str(exc))
                    self.send_response(401)
                    self.end_headers()
                    return
                receiver.received.append({"headers": headers, "event": json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server, self.url = serve_loopback(Handler)

    def events(self, type_suffix: str) -> list[dict]:
        return [r["event"] for r in self.received if r["event"]["type"].endswith(type_suffix)]

    def close(self):
        self.server.shutdown()


class Doclane:
    def __init__(self, root: Path, webhook: str | None = None, env: dict | None = None, quiet: bool = True):
        self.root = root
        self.quiet = quiet  # False: the console progress lines too (into the log: not a terminal)
        self.inbox = root / "inbox"
        self.data = root / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.webhook = webhook
        # A webhook receiver of these tests listens on loopback, which the SSRF guard
        # refuses unless allowed (functions/urlguard.py).
        allow = {"DOCLANE_WEBHOOK_ALLOW": "127.0.0.1"} if webhook else {}
        self.env = {**os.environ, "DOCLANE_WEBHOOK_SECRET": SECRET, "DOCLANE_IDLE_SECONDS": "20",
                    "DOCLANE_API_KEY": API_KEY, "HF_HUB_OFFLINE": "1", **allow, **(env or {})}
        self.headers = dict(AUTH)
        self.proc: subprocess.Popen | None = None
        self.inbox.mkdir(parents=True, exist_ok=True)

    def start(self) -> "Doclane":
        args = [sys.executable, "-m", "doclane.local.cli", "--data-dir", str(self.data), "up",
                *(["--quiet"] if self.quiet else []), "--inbox", str(self.inbox), "--port", str(self.port)]
        if self.webhook:
            args += ["--webhook", self.webhook]
        self.log = open(self.root / f"up-{int(time.time() * 1000)}.log", "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=self.env, cwd=self.root)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"doclane up exited with {self.proc.returncode}: {self.logs()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("doclane up did not serve within 60 s: " + self.logs())

    def logs(self) -> str:
        out = []
        for path in sorted(self.root.glob("up-*.log")) + sorted((self.data / "logs").glob("*.log")):
            out.append(f"--- {path.name}\n{path.read_text()[-3000:]}")
        return "\n".join(out)

    def drop(self, *paths: Path) -> None:
        for p in paths:
            # copy beside, then rename: like a careful client (a slow writer is covered elsewhere)
            tmp = self.inbox / f".{p.name}.part"
            shutil.copyfile(p, tmp)
            os.replace(tmp, self.inbox / p.name)

    def get(self, path: str, **params):
        resp = httpx.get(self.url + path, params=params, headers=self.headers, timeout=120)
        resp.raise_for_status()
        return resp.json()

    def wait_done(self, count: int, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        stats = {}
        while time.monotonic() < deadline:
            stats = self.get("/stats")
            s = stats["status"]
            if sum(s.values()) >= count and s.get("indexed", 0) + s.get("failed", 0) == sum(s.values()):
                return stats
            time.sleep(0.5)
        raise AssertionError(f"not done in {timeout}s: {stats}\n{self.logs()}")

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()


class MotoS3:
    """A real HTTP S3 API on loopback (moto's server), for the S3 adapter and
    the S3 end-to-end tests. moto stores objects but sends no bucket
    notifications: tests post them as MinIO would."""

    ACCESS_KEY, SECRET_KEY, REGION = "doclane-test", "doclane-test-secret", "us-east-1"

    def __init__(self):
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY,
                "AWS_REGION": self.REGION, "DOCLANE_S3_ENDPOINT_URL": self.endpoint}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.REGION,
                            aws_access_key_id=self.ACCESS_KEY, aws_secret_access_key=self.SECRET_KEY)

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.server.stop()


def minio_record(bucket: str, key: str, *, etag: str | None = None, size: int | None = None,
                 content_type: str | None = None, removed: bool = False) -> dict:
    """A bucket notification in MinIO's current shape (cmd/event-notification.go):
    URL-query-escaped key, top-level EventName and Key, sequencer = hex(mtime ns)."""
    from urllib.parse import quote_plus

    name = "s3:ObjectRemoved:Delete" if removed else "s3:ObjectCreated:Put"
    obj: dict = {"key": quote_plus(key), "sequencer": f"{time.time_ns():X}"}
    if not removed:
        obj.update({"size": size, "eTag": etag, "contentType": content_type or "application/octet-stream",
                    "userMetadata": {"content-type": content_type or "application/octet-stream"}})
    return {"EventName": name, "Key": f"{bucket}/{key}", "Records": [{
        "eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "", "eventName": name,
        "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "userIdentity": {"principalId": "minioadmin"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "Config",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "minioadmin"}, "arn": f"arn:aws:s3:::{bucket}"},
               "object": obj},
        "source": {"host": "127.0.0.1", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7.0.70"},
    }]}
