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


def _port_pair() -> tuple[int, socket.socket]:
    """A free port P whose next port P + 1 we hold (bound and listening)."""
    for _ in range(50):
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1] - 1
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port))
        except OSError:
            held.close()
            continue
        held.listen()
        return port, held
    raise AssertionError("no free port below a free port in 50 tries")


@pytest.mark.parametrize("explicit", [False, True])
def test_a_taken_websocket_port(settings, explicit):
    """The WebSocket goes on the HTTP port + 1 by default; when that port is
    taken (the browser test once met this: an ephemeral HTTP port's neighbour
    in use) it moves to a free port the pages are told of. A DOCLANE_WS_PORT
    that is taken turns the WebSocket off instead (the pages use SSE)."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    port, held = _port_pair()
    with held:
        update = {"port": port, "ws_port": port + 1} if explicit else {"port": port}
        runtime = Runtime(settings.model_copy(update=update), in_process=True)
        try:
            ws_url = runtime.app.config.get("doclane.ws_url")
            if explicit:
                assert runtime.ws is None and ws_url is None
                return
            assert ws_url and int(ws_url.rsplit(":", 1)[1]) not in (port, port + 1)
            threading.Thread(target=runtime.ws.serve_forever, daemon=True).start()
            with pytest.raises(InvalidStatus) as refused:  # it answers: no credentials, no WebSocket
                connect(ws_url + "/ws/progress/b1", open_timeout=10)
            assert refused.value.response.status_code == 401
        finally:
            runtime.shutdown()
