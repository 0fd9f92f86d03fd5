"""MetadataStore on SQLite (stdlib sqlite3): the embedded default, no server.

Several processes (the functions started by `doclane up`) write one file, so:
WAL lets readers run beside the one writer; every write transaction starts
with BEGIN IMMEDIATE, taking the write lock up front, because a deferred
transaction that upgrades from read to write can fail with SQLITE_BUSY at once,
ignoring busy_timeout; and busy_timeout makes a second writer wait rather than
fail. Lock waits longer than that become `Retryable`.

Within a process each thread gets its own connection (sqlite3 connections are
not meant to be shared by concurrent threads), and a forked child opens fresh
ones instead of reusing its parent's file handles.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from doclane.functions.adapters.sql_metadata import SqlMetadata, Tx
from doclane.functions.errors import ConfigError, Retryable

_BUSY = ("database is locked", "database table is locked", "database is busy")


class _SqliteTx(Tx):
    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)


class SqliteMetadata(SqlMetadata):
    dialect = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 30.0):
        self.path = Path(path)
        if str(path) == ":memory:" or str(path).startswith("file:"):
            raise ConfigError(
                f"SqliteMetadata needs a file path, got {str(path)!r}: several processes share the "
                "store, so an in-memory database cannot work (tests can use a temporary folder)"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the folder of the metadata database {self.path}: {e}") from e
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        with self._transaction(write=True) as tx:
            self._migrate(tx)

    def __repr__(self) -> str:
        return f"SqliteMetadata({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        try:
            # isolation_level=None: the module opens no implicit transactions;
            # _transaction says BEGIN itself. check_same_thread=False only so
            # close() may close other threads' connections.
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
            self._enable_wal(conn)
            # NORMAL is safe from corruption in WAL mode; a power cut may lose
            # the last commits, never consistency.
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.OperationalError as e:
            if _is_busy(e):
                raise Retryable(f"the metadata database {self.path} is locked: {e}") from e
            raise ConfigError(f"cannot open the metadata database {self.path}: {e}") from e
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switching a new file to WAL needs a moment alone with it, and SQLite
        does not wait (busy_timeout) for it: processes starting together on a
        fresh file see "locked". Retry within the busy timeout."""
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as e:
                if not _is_busy(e) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    def _connection(self) -> sqlite3.Connection:
        if os.getpid() != self._pid:  # forked: the parent's handles are not ours to use
            self._pid, self._local, self._connections = os.getpid(), threading.local(), []
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Tx]:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _SqliteTx(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as e:
            if _is_busy(e):
                raise Retryable(f"the metadata database {self.path} stayed locked "
                                f"for {self._busy_timeout_s:g} s: {e}") from e
            raise

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()


def _is_busy(error: sqlite3.OperationalError) -> bool:
    return any(text in str(error) for text in _BUSY)
