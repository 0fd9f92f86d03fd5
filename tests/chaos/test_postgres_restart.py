"""Chaos (b): PostgreSQL (the metadata store) stops and starts again while
documents are in flight through `doclane up` on RabbitMQ and PostgreSQL.

Designed recovery: the connection pool of every process drops its broken
connections and reconnects by itself; a call made while the server is down
raises Retryable, so its event is retried with back-off (a short outage
dead-letters nothing)."""

from __future__ import annotations

import pytest

from tests.chaos import faults
from tests.chaos.invariants import Tally, check, corpus, verdict, wait_mid_run

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.slow]


def test_postgres_restart_mid_run_loses_nothing_and_repeats_nothing(tmp_path, production, report):
    cluster = faults.require_postgres_control()
    doclane = production.doclane
    docs = corpus(tmp_path / "files", generated=10)
    tally = Tally("postgresql restart", "pool reconnects; retry with back-off", len(docs.names))
    doclane.drop(*docs.files)
    _, pending = wait_mid_run(doclane, docs)
    faults.restart_postgres(cluster, production.database.admin_url)
    check(doclane, production.receiver, docs, tally, settle_timeout=300,
          idle=lambda: faults.broker_busy(production.broker))
    report(tally)
    assert pending > 0
    assert doclane.proc.poll() is None, "doclane up died:\n" + doclane.logs()
    assert not tally.problems, verdict(tally) + "\n" + doclane.logs()
