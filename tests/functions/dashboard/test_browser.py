"""The dashboard in headless Chromium against a real `doclane up`: log in,
drop two files, watch them finish live, search, open one, correct its
category, retry the failed one, read the stats. A screenshot of each page
goes to docs/screenshots/ (the README shows one).

Needs Debian's chromium (`make browser-deps` installs it) and the
`playwright` package, driven with executable_path (no `playwright install`:
nothing is downloaded). Without them the test skips, and fails in CI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import require
from tests.e2e.harness import API_KEY, Doclane

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).parents[3]
SHOTS = ROOT / "docs" / "screenshots"
FIXTURES = ROOT / "tests" / "fixtures"
INVOICE = FIXTURES / "invoices" / "coolblue1.pdf"
BROKEN = FIXTURES / "docs" / "password.pdf"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    require(path is not None, "no chromium on PATH: run `make browser-deps` (apt-get install chromium, as root)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require(False, "the playwright package is missing: make install (it is in the dev extra)")
    return path


@pytest.fixture(scope="module")
def doclane(tmp_path_factory):
    run = Doclane(tmp_path_factory.mktemp("browser")).start()
    yield run
    run.stop()


@pytest.fixture(scope="module")
def page(doclane, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("profile")), executable_path=executable, headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1200, "height": 860})
        tab = browser.new_page()
        tab.set_default_timeout(30_000)
        yield tab
        browser.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def drop_files(page, *paths: Path) -> None:
    """A real drop event on the drop zone, carrying File objects (what a
    person dragging files from the desktop produces)."""
    files = [{"name": p.name, "bytes": list(p.read_bytes()), "type": "application/pdf"} for p in paths]
    page.evaluate("""(files) => {
        const dt = new DataTransfer();
        for (const f of files) dt.items.add(new File([new Uint8Array(f.bytes)], f.name, {type: f.type}));
        const zone = document.getElementById("drop");
        zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: dt, bubbles: true, cancelable: true}));
        zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", files)


def test_the_dashboard_end_to_end(doclane, page):
    # Nobody gets in without a key; the login sets the session cookie.
    page.goto(doclane.url + "/")
    assert page.url.endswith("/login?next=/")
    page.fill("input[name=key]", "not-a-key")
    page.click("button[type=submit]")
    assert "unknown or revoked" in page.inner_text("main")
    page.fill("input[name=key]", API_KEY)
    shot(page, "login")
    page.click("button[type=submit]")
    page.wait_for_selector("#drop")
    cookie = next(c for c in page.context.cookies() if c["name"] == "doclane_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Lax"

    # Upload by drag and drop, and watch the batch finish live (Server-Sent Events).
    drop_files(page, INVOICE, BROKEN)
    page.wait_for_function("document.getElementById('batch-summary').textContent.includes('done')", timeout=300_000)
    summary = page.inner_text("#batch-summary")
    assert summary.startswith("1 indexed, 1 failed"), summary
    assert "encrypted" in page.inner_text("#batch-docs").lower() or "password" in page.inner_text("#batch-docs").lower()
    batch_id = page.get_attribute("#batch", "data-batch")
    # The WebSocket, from the page, with nothing but the session cookie.
    message = page.evaluate("""(id) => new Promise((ok, fail) => {
        const ws = new WebSocket(document.body.dataset.ws + "/ws/progress/" + id);
        ws.onmessage = (e) => { ok(e.data); ws.close(); };
        ws.onerror = () => fail("websocket refused");
    })""", batch_id)
    assert json.loads(message)["done"] and json.loads(message)["batch_id"] == batch_id
    shot(page, "upload")

    # Search, with highlights.
    page.click("nav >> text=Search")
    page.fill("input[name=q]", "coolblue")
    page.select_option("select[name=mode]", "keyword")
    page.click("form.search button")
    page.wait_for_selector(".hit")
    assert "coolblue1.pdf" in page.inner_text(".results")
    assert page.locator(".snippet mark").count() >= 1
    shot(page, "search")

    # The document: fields with confidence, timeline with stage timings, the original.
    page.click(".hit a")
    page.wait_for_selector("#timeline tr")
    assert page.locator("meter").count() >= 1 and "invoice" in page.inner_text("#category")
    assert " ms" in page.inner_text("#timeline")
    with page.expect_download() as download:
        page.click("text=Download original")
    assert Path(download.value.path()).read_bytes() == INVOICE.read_bytes()
    shot(page, "document")

    # Correct the category; the pipeline extracts again for the new one.
    page.select_option("select[name=category]", "receipt")
    # The first correction loads the embedding model into the gateway (the
    # classifier learns the example), which takes a while on a busy machine.
    page.click("#correct button", timeout=240_000)
    assert "Category set to receipt" in page.inner_text(".flash")
    assert page.inner_text("#category").startswith("receipt")

    # Failures: the reason, and a retry.
    page.click("nav >> text=Failures")
    assert "password.pdf" in page.inner_text("main")
    page.click("tr:has-text('password.pdf') button")
    assert "1 document sent through the pipeline again" in page.inner_text(".flash")
    shot(page, "failures")

    # Stats: counts per stage and category, and the throughput chart.
    page.click("nav >> text=Stats")
    assert page.locator("svg.chart rect").count() == 12
    assert "receipt" in page.inner_text("main")
    shot(page, "stats")
