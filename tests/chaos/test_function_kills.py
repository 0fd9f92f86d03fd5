"""Chaos (c): SIGKILL every kind of function process of `doclane up`
(ingest, classify, extract, index, notify) while it holds a delivery (notify:
while its webhook request is in flight), on the embedded defaults (SQLite
bus, metadata and index).

Designed recovery: a crash and a restart. The supervisor sees the process
gone, releases its leases at once (the attempt still counts) and starts a
new process because the queue has work; the new process handles the
delivery again, and its outputs' deterministic ids make the repeat a no-op."""

from __future__ import annotations

import time

import pytest

from doclane.functions.runtime import STAGES
from tests.chaos import faults
from tests.chaos.invariants import CHAOS_ENV, Tally, check, corpus, verdict
from tests.e2e.harness import Doclane, Receiver

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.slow]


def test_sigkill_of_each_function_mid_delivery_loses_nothing_and_repeats_nothing(tmp_path, report):
    docs = corpus(tmp_path / "files", generated=10)
    tally = Tally("sigkill each function", "supervisor restarts it; leases released", len(docs.names))
    hold = faults.HoldFirst()  # notify's kill: while its first webhook is in flight
    receiver = Receiver(fault=hold)
    doclane = Doclane(tmp_path / "run", webhook=receiver.url, env=CHAOS_ENV)
    try:
        doclane.start()
        bus = doclane.data / "bus.sqlite"
        doclane.drop(*docs.files)
        killed: dict[str, int] = {}  # function -> documents without their webhook yet when it was killed
        deadline = time.monotonic() + 300
        while len(killed) < len(STAGES) and time.monotonic() < deadline:
            running = faults.function_processes(doclane.proc.pid)
            for name in STAGES:
                busy = hold.holding.is_set() if name == "notify" else faults.leased(bus, name)
                if name in killed or not running.get(name) or not busy:
                    continue
                for process in running[name]:  # it holds a delivery now: kill every process of the kind
                    faults.sigkill(process)
                killed[name] = len(docs.names) - len({r["event"]["subject"] for r in receiver.received})
            if "notify" in killed:
                hold.release.set()
            time.sleep(0.02)
        check(doclane, receiver, docs, tally, settle_timeout=300)
        report(tally)
        assert set(killed) == set(STAGES), f"never caught holding a delivery: {set(STAGES) - set(killed)}"
        assert all(pending > 0 for pending in killed.values()), killed
        assert not tally.problems, verdict(tally) + "\n" + doclane.logs()
    finally:
        hold.release.set()
        doclane.stop()
        receiver.close()
