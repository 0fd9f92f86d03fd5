"""MetadataStore on PostgreSQL: psycopg 3 with a psycopg_pool connection pool.

Each public call borrows a pooled connection for one transaction (the pool
commits on success, rolls back on error). READ COMMITTED is enough: every
race the store cares about is settled by one conditional statement whose row
lock makes the second writer re-check its WHERE clause (see
SqlMetadata.complete_batch_once).

A server that is down, restarting or shedding connections surfaces as
psycopg's OperationalError (PoolTimeout is one); it becomes `Retryable`, so
the event is redelivered later instead of dead-lettered.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from doclane.functions.adapters.sql_metadata import SqlMetadata, Tx
from doclane.functions.errors import ConfigError, Retryable

# Serialises migrations of concurrent starts (any constant, same in every process).
_MIGRATION_LOCK = 0x646F636C616E65  # "doclane"


class _PostgresTx(Tx):
    def __init__(self, conn: psycopg.Connection):
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor:
        return self._conn.execute(sql.replace("?", "%s"), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows)


class PostgresMetadata(SqlMetadata):
    dialect = "postgres"

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 8, timeout_s: float = 10.0):
        """`url` is a libpq URL or conninfo; a schema can be chosen with
        `?options=-csearch_path%3Dname`. Connects and migrates at once, so bad
        configuration fails at start, not on the first event."""
        self._where = _describe(url)
        self._timeout_s = timeout_s
        # One direct connection first: its error says why (refused, no such
        # database, auth) where the pool would only say it timed out.
        try:
            with psycopg.connect(url, connect_timeout=max(1, math.ceil(timeout_s)),
                                 row_factory=dict_row) as conn:
                with conn.transaction():
                    tx = _PostgresTx(conn)
                    tx.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
                    self._migrate(tx)
        except psycopg.OperationalError as e:
            raise Retryable(f"PostgreSQL metadata store at {self._where} is unreachable: {_first_line(e)}") from e
        except psycopg.ProgrammingError as e:
            raise ConfigError(f"cannot prepare the metadata schema at {self._where}: {_first_line(e)}") from e
        self._pool = ConnectionPool(
            url, min_size=min_size, max_size=max_size, timeout=timeout_s, open=False,
            kwargs={"row_factory": dict_row}, check=ConnectionPool.check_connection,
            name="doclane-metadata",
        )
        self._pool.open(wait=False)

    def __repr__(self) -> str:
        return f"PostgresMetadata({self._where!r})"

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Tx]:
        try:
            with self._pool.connection() as conn:
                yield _PostgresTx(conn)
        except psycopg.OperationalError as e:
            raise Retryable(f"PostgreSQL metadata store at {self._where} failed: {_first_line(e)}") from e

    def close(self) -> None:
        self._pool.close()


def _describe(url: str) -> str:
    """host:port/dbname, never the password, for error messages."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError as e:
        raise ConfigError(f"the PostgreSQL URL is malformed ({_first_line(e)}): "
                          "use postgresql://user@host:5432/dbname") from e
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
