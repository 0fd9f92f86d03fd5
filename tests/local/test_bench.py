"""`doclane bench --quick`: every section runs for real (a `doclane up` child
process, the embedded bus, MiniLM, the embedded index) and reports figures."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from doclane.local import bench as bench_mod
from doclane.local.cli import main
from tests.amqp_support import AMQP_URL, require_rabbitmq

pytestmark = pytest.mark.slow


def _bench(*args: str) -> dict:
    result = CliRunner().invoke(main, ["bench", "--quick", "--json", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.timeout(1500)  # a doclane up with cold starts and a scale to zero: minutes on a busy machine
def test_quick_bench_runs_every_section(tmp_path, monkeypatch, fixtures):
    monkeypatch.delenv("DOCLANE_AMQP_URL", raising=False)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "AzureInterior.pdf").write_bytes((fixtures / "invoices" / "AzureInterior.pdf").read_bytes())
    report = _bench("--corpus", str(corpus), "--docs", "4", "--plots", str(tmp_path / "plots"))

    pipeline = report["pipeline"]
    up, floor = pipeline["up"], pipeline["floor"]
    assert up["documents"] == floor["documents"] == 4 and up["failed"] == 0  # --docs: the PDF and 3 generated
    assert up["docs_per_s"] > 0 and floor["docs_per_s"] > 0
    assert pipeline["ratio_floor_over_up"] == pytest.approx(floor["docs_per_s"] / up["docs_per_s"])
    cold = up["cold_start"]
    assert cold["first_document_s"] > 0 and cold["warm_document_s"] > 0 and cold["after_scale_to_zero_s"] > 0
    # every stage ran in its own process, each with a measured peak
    assert {"ingest", "classify", "extract", "index", "notify"} <= set(up["peak_memory_mb"])
    # the functions' own processes (a short-lived helper the sampler caught at its start may be smaller)
    assert all(up["peak_memory_mb"][f] > 10 for f in ("ingest", "classify", "extract", "index", "notify"))

    assert report["bus"]["sqlite_binding"]["end_to_end_per_s"] > 0
    assert report["bus"]["rabbitmq"].startswith("skipped")
    assert report["embedding"]["embedder_per_s"] > 0 and report["embedding"]["raw_encode_per_s"] > 0
    assert set(report["search"]) == {"1000", "5000"}
    for size in report["search"].values():
        for mode in ("keyword", "semantic", "hybrid"):
            f = size["modes"][mode]
            assert 0 < f["p50_ms"] <= f["p95_ms"] <= f["p99_ms"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["bench-latency.png", "bench-throughput.png"]

    text = bench_mod.render(report)
    for heading in ("(a)", "(b)", "(c)", "(d)", "(e)", "(f)"):
        assert heading in text


def test_bus_section_against_rabbitmq_and_raw_pika(monkeypatch):
    require_rabbitmq()
    monkeypatch.setenv("DOCLANE_AMQP_URL", AMQP_URL)
    report = _bench("--only", "b")
    assert set(report) >= {"bus"} and "pipeline" not in report and "search" not in report
    bus = report["bus"]
    assert bus["rabbitmq_binding"]["n"] == bus["raw_pika"]["n"] == 200
    assert bus["ratio_raw_over_binding"] == pytest.approx(
        bus["raw_pika"]["end_to_end_per_s"] / bus["rabbitmq_binding"]["end_to_end_per_s"])


def test_only_refuses_unknown_sections():
    result = CliRunner().invoke(main, ["bench", "--only", "xyz"])
    assert result.exit_code == 2 and "--only takes letters of abcdef" in result.output


def test_a_worker_that_exited_does_not_hide_the_live_ones():
    """The scale-to-zero wait asks which function processes are left: one that
    exited and is not reaped yet (a zombie) once made the answer "none"."""
    import os
    import subprocess
    import sys
    import time

    import psutil

    from doclane.local.bench_pipeline import _workers

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "doclane.local.worker", "x"])
    gone = subprocess.Popen([sys.executable, "-c", "pass", "doclane.local.worker", "y"])
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(gone.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p.pid for p in _workers(os.getpid())] == [alive.pid]
    finally:
        alive.kill()
        alive.wait()
        gone.wait()
