"""The function images, built with Podman (here: the wrapper that the
workplace's shared tools/container-base sets up, or DOCLANE_PODMAN) via `make images`, and the functions
answering inside their containers on 127.0.0.1. Where no container runtime can
run (a laptop without shared/), these tests skip with the reason; in CI they
must run."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from cloudevents.conversion import to_binary, to_structured

from doclane.events.envelope import new_event
from doclane.functions.notifications import record_for
from tests.conftest import require
from tests.infra.manifests import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3000)]  # a cold build takes minutes
CONTAINER_BASE = ROOT.parent / "shared" / "tools" / "container-base"
IMAGES = ("ingest", "api")
TAG = "test"


@pytest.fixture(scope="module")
def podman() -> str:
    wrapper = os.environ.get("DOCLANE_PODMAN")  # a ready podman/docker command, if you have one
    if not wrapper:
        require(CONTAINER_BASE.exists(), f"no container runtime set up: {CONTAINER_BASE} is missing "
                                         "(set DOCLANE_PODMAN to a podman command to run these tests)")
        done = subprocess.run([str(CONTAINER_BASE)], capture_output=True, text=True, timeout=1200)
        require(done.returncode == 0, f"container-base failed: {done.stderr[-500:]}")
        wrapper = done.stdout.strip().splitlines()[-1]
    return wrapper


@pytest.fixture(scope="module")
def images(podman) -> dict[str, str]:
    started = time.monotonic()
    done = subprocess.run(
        ["make", "-s", "images", f"IMAGES={' '.join(IMAGES)}", f"CONTAINER={podman}", f"TAG={TAG}",
         "REGISTRY=doclane", "BUILD_FLAGS=--pull=never --network=host"],
        cwd=ROOT, capture_output=True, text=True, timeout=3000)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(f"\nmake images ({' '.join(IMAGES)}): {time.monotonic() - started:.0f} s\n{done.stdout[-400:]}")
    return {name: f"doclane/{name}:{TAG}" for name in IMAGES}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    def __init__(self, podman: str, image: str, target: str, data: Path, env: dict[str, str] | None = None):
        self.podman, self.port = podman, _free_port()
        self.name = f"doclane-test-{target}-{uuid.uuid4().hex[:8]}"
        subprocess.run([podman, "run", "-d", "--rm", "--name", self.name, "--network=host",
                        "-v", f"{data}:/var/lib/doclane",
                        *[f"--env={k}={v}" for k, v in (env or {}).items()], image,
                        "python", "-m", "doclane.functions.main", target, "--host", "127.0.0.1",
                        "--port", str(self.port)], check=True, capture_output=True, timeout=120)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait(self, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.5)
        logs = subprocess.run([self.podman, "logs", self.name], capture_output=True, text=True).stderr
        raise AssertionError(f"{self.name} did not become healthy:\n{logs[-2000:]}")

    def stop(self) -> None:
        subprocess.run([self.podman, "rm", "-f", self.name], capture_output=True, timeout=60)


@pytest.fixture
def data_dir(tmp_path):
    data = tmp_path / "data"
    (data / "inbox").mkdir(parents=True)
    (data / "inbox" / "note.txt").write_text("Dear Anna, the invoice is attached. Kind regards, Bob")
    # the containers run as uid 10001; the folder is the test's own scratch space
    for path in (data, data / "inbox"):
        path.chmod(0o777)
    yield data
    shutil.rmtree(data, ignore_errors=True)


def test_ingest_answers_cloudevents_in_both_modes(podman, images, data_dir):
    box = Running(podman, images["ingest"], "ingest", data_dir)
    try:
        box.wait()
        for path in ("/healthz", "/_/health"):
            assert httpx.get(box.url + path).json() == {"status": "ok", "function": "ingest"}
        event = new_event("bucket.notification", {"Records": [record_for("created", "inbox", "note.txt", size=53)]},
                          subject=None, source="test")
        ids = []
        for encode in (to_binary, to_structured):
            headers, body = encode(event)
            resp = httpx.post(box.url + "/", headers={**dict(headers), "Prefer": "reply"}, content=body, timeout=30)
            assert resp.status_code == 200, resp.text
            assert resp.headers["ce-type"] == "io.doclane.document.uploaded.v1"
            assert resp.json()["filename"] == "note.txt" and resp.json()["size"] == 53
            ids.append(resp.headers["ce-id"])
        assert ids[0] == ids[1]  # the same notification, the same event, in either mode
        bad = httpx.post(box.url + "/", headers={"content-type": "application/json"}, content=b"{}")
        assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
    finally:
        box.stop()


def test_api_searches_an_index_inside_its_container(podman, images, data_dir):
    """The index is written here with the same adapter and model; the api
    container embeds the query with the MiniLM baked into its image."""
    from doclane.functions.adapters.embedded_index import EmbeddedIndex
    from doclane.functions.adapters.minilm import shared
    from doclane.functions.ports import Chunk, IndexedDocument

    texts = ["Invoice INV-7 from ACME: total due 1,234.56 EUR by 30 June.", "Minutes of the board meeting."]
    index = EmbeddedIndex(data_dir / "index.sqlite")
    for i, text in enumerate(texts):
        doc = IndexedDocument(document_id=f"doc-{i}", filename=f"f{i}.txt", category="invoice" if i == 0 else "memo",
                              fields={}, created_at="2024-01-01T00:00:00Z")
        index.upsert(doc, [Chunk(document_id=doc.document_id, ordinal=0, text=text)], shared().embed([text]))
    index.close()
    for path in data_dir.iterdir():
        path.chmod(0o777)
    key = f"test-{uuid.uuid4().hex}"  # the api asks every caller but health for a key
    box = Running(podman, images["api"], "api", data_dir, env={"DOCLANE_API_KEY": key})
    auth = {"Authorization": f"Bearer {key}"}
    try:
        box.wait(180)
        assert httpx.get(box.url + "/_/health").status_code == 200
        for mode in ("keyword", "semantic", "hybrid"):
            resp = httpx.get(box.url + "/search", params={"q": "how much money is owed", "mode": mode}, headers=auth,
                             timeout=120)
            assert resp.status_code == 200, resp.text
            hits = resp.json()["results"]
            if mode != "keyword":
                assert hits and hits[0]["document_id"] == "doc-0", (mode, hits)
        resp = httpx.get(box.url + "/search", params={"q": "invoice", "mode": "keyword"}, headers=auth, timeout=60)
        assert httpx.get(box.url + "/search", params={"q": "invoice"}).status_code == 401
        assert [h["document_id"] for h in resp.json()["results"]] == ["doc-0"]
    finally:
        box.stop()
