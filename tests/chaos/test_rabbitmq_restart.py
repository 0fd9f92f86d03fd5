"""Chaos (a): the RabbitMQ node stops and starts again while documents are
in flight through `doclane up` as in production (files in S3, MinIO's AMQP
notifications, RabbitMQ as the bus, PostgreSQL for metadata).

Designed recovery: every process reconnects by itself, with back-off. The
function processes (binding.consume) and `doclane up`'s supervisor ride
out the outage instead of exiting; the MinIO notification consumer
reconnects; deliveries that were in flight on the dropped connections are
redelivered by the broker, and the outputs' deterministic ids make a
repeat a no-op. Half the files are notified after the restart."""

from __future__ import annotations

import pytest

from tests.chaos import faults
from tests.chaos.invariants import Tally, check, corpus, verdict, start_mid_run

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.slow]


def test_rabbitmq_restart_mid_run_loses_nothing_and_repeats_nothing(tmp_path, production, report):
    faults.require_rabbitmq_control()
    docs = corpus(tmp_path / "files", generated=10)
    tally = Tally("rabbitmq restart", "reconnect with back-off", len(docs.names))
    before, after = docs.halves()
    pending = start_mid_run(production.put, production.doclane, before)
    faults.restart_rabbitmq()
    production.put(*after)
    check(production.doclane, production.receiver, docs, tally, idle=lambda: faults.broker_busy(production.broker))
    report(tally)
    assert pending > 0
    assert not tally.problems, verdict(tally) + "\n" + production.doclane.logs()
