"""`doclane up --in-process`: the same runtime with functions as threads."""

import socket
import threading
import time

import httpx
import pytest

from doclane.functions.errors import ConfigError
from doclane.local.up import Runtime


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_in_process_runtime_indexes_a_dropped_file(settings):
    settings = settings.model_copy(update={"port": free_port(), "api_key": "in-process-test-key"})
    auth = {"Authorization": "Bearer in-process-test-key"}
    runtime = Runtime(settings, in_process=True)
    thread = threading.Thread(target=runtime.run, kwargs={"console": False}, daemon=True)
    thread.start()
    try:
        with pytest.raises(ConfigError, match="already running"):
            Runtime(settings.model_copy(update={"port": free_port()}))
        (settings.inbox / "letter.txt").write_text(
            "Dear Ms Smith,\n\nThank you for your letter of 3 March about the garden fence.\n\n"
            "Yours sincerely,\nJohn Brown")
        deadline = time.monotonic() + 300  # cold: torch, Docling and the model load here
        status = {}
        while time.monotonic() < deadline:
            resp = httpx.get(f"{runtime.url}/stats", headers=auth, timeout=60)
            assert resp.status_code == 200, resp.text
            status = resp.json()["status"]
            if status.get("indexed"):
                break
            time.sleep(0.2)
        assert status == {"indexed": 1}
        hit = httpx.get(f"{runtime.url}/search", params={"q": "garden fence"}, headers=auth, timeout=60).json()["results"][0]
        assert hit["filename"] == "letter.txt" and hit["category"] == "letter"
        assert all(w.thread is not None for ws in runtime.supervisor.workers.values() for w in ws)
    finally:
        runtime.stop_event.set()
        thread.join(30)
