"""Chaos (d): the webhook receiver fails (HTTP 500/503), then hangs longer
than the delivery timeout, then recovers, while documents go through.

Designed recovery: notify records each failed attempt and raises
Retryable, so its event comes back with back-off; a receiver that already
took an event is never called again for it. There are fewer faults than
an event has attempts, so none may end dead-lettered."""

from __future__ import annotations

import pytest

from tests.chaos import faults
from tests.chaos.invariants import CHAOS_ENV, Tally, check, corpus, verdict
from tests.e2e.harness import Doclane, Receiver

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.slow]

# DOCLANE_WEBHOOK_TIMEOUT for this run: a hang must outlast it, and a healthy
# answer on a busy machine must not (the sender would give up on a delivery the
# receiver took, and send it again).
TIMEOUT = 5.0


def test_failing_then_hanging_receiver_gets_every_webhook_once(tmp_path, report):
    docs = corpus(tmp_path / "files", generated=10)
    tally = Tally("webhook 5xx, hang, recover", "retry with back-off", len(docs.names))
    # The receiver is down from the first webhook on: notify meets it with documents in flight.
    schedule = faults.FaultSchedule(errors=2, hangs=2, hang_seconds=TIMEOUT * 2.5)
    receiver = Receiver(fault=schedule)
    doclane = Doclane(tmp_path / "run", webhook=receiver.url,
                      env={**CHAOS_ENV, "DOCLANE_WEBHOOK_TIMEOUT": str(TIMEOUT)})
    try:
        doclane.start()
        doclane.drop(*docs.files)
        check(doclane, receiver, docs, tally, settle_timeout=300)
        report(tally)
        assert schedule.done, f"only {len(schedule.served)} of {len(schedule.plan)} faults were met"
        assert [f["status"] for f in receiver.faulted] == [s for s, _ in schedule.plan]
        assert not tally.problems, verdict(tally) + "\n" + doclane.logs()
        # each failed attempt is on record, with why it failed
        failed = [d for doc in doclane.get("/documents", limit=500)["documents"]
                  for d in doclane.get(f"/documents/{doc['document_id']}")["deliveries"] if not d["ok"]]
        assert {500, 503} <= {d["status"] for d in failed}, failed
        assert sum("timeout" in (d["error"] or "").lower() for d in failed) >= 2, failed
    finally:
        doclane.stop()
        receiver.close()
