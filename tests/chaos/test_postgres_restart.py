"""Chaos (b): PostgreSQL (the metadata store, and RabbitMQ's de-duplication
record) stops and starts again while documents are in flight through
`doclane up` as in production (files in S3, MinIO's AMQP notifications,
RabbitMQ as the bus).

Designed recovery: the connection pool of every process drops its broken
connections and reconnects by itself; a call made while the server is down
raises Retryable, so its event is retried with back-off (a short outage
dead-letters nothing); a function process started during the outage waits
for the store (local/worker.py) instead of crash-looping. Half the files
are notified during the outage: ingest must retry them until the store
is back."""

from __future__ import annotations

import pytest

from tests.chaos import faults
from tests.chaos.invariants import Tally, check, corpus, verdict, start_mid_run

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.slow]


def test_postgres_restart_mid_run_loses_nothing_and_repeats_nothing(tmp_path, production, report):
    cluster = faults.require_postgres_control()
    docs = corpus(tmp_path / "files", generated=10)
    tally = Tally("postgresql restart", "pool reconnects; retry with back-off", len(docs.names))
    before, after = docs.halves()
    pending = start_mid_run(production.put, production.doclane, before)
    with faults.postgres_down(cluster, production.database.admin_url):
        production.put(*after)  # their notifications arrive while the store is down
    check(production.doclane, production.receiver, docs, tally, idle=lambda: faults.broker_busy(production.broker))
    report(tally)
    assert pending > 0
    assert not tally.problems, verdict(tally) + "\n" + production.doclane.logs()
