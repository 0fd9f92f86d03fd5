"""Chaos (a): the RabbitMQ node stops and starts again while documents are
in flight through `doclane up` on RabbitMQ (bus) and PostgreSQL (metadata).

Designed recovery: every process reconnects by itself. The function
processes and `doclane up`'s supervisor and watcher see the connection
drop and retry with back-off until the broker is back; deliveries that were
in flight on the dropped connections are redelivered by the broker, and
the outputs' deterministic ids make a repeat a no-op."""

from __future__ import annotations

import pytest

from tests.chaos import faults
from tests.chaos.invariants import Tally, check, corpus, verdict, wait_mid_run

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.slow]


def test_rabbitmq_restart_mid_run_loses_nothing_and_repeats_nothing(tmp_path, production, report):
    faults.require_rabbitmq_control()
    doclane = production.doclane
    docs = corpus(tmp_path / "files", generated=10)
    tally = Tally("rabbitmq restart", "reconnect with back-off", len(docs.names))
    doclane.drop(*docs.files)
    _, pending = wait_mid_run(doclane, docs)
    faults.restart_rabbitmq()
    check(doclane, production.receiver, docs, tally, settle_timeout=300,
          idle=lambda: faults.broker_busy(production.broker))
    report(tally)
    assert pending > 0
    assert doclane.proc.poll() is None, "doclane up died:\n" + doclane.logs()
    assert not tally.problems, verdict(tally) + "\n" + doclane.logs()
