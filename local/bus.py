"""The embedded event bus: a durable queue in one SQLite file.

Why SQLite: it is in the standard library, several processes can share one
file safely (WAL), and a transaction can publish the next events and settle
a delivery together. Each trigger's queue is a set of rows; a delivery is a
lease on a row, so a worker that dies (even by SIGKILL) only delays its
messages until the lease expires or the supervisor releases it.

Waiting consumers do not poll at a fixed rate: on Linux each one binds an
abstract-namespace datagram socket (a doorbell), registers its address in
the `waiters` table, and sleeps in select(); a publisher rings the doorbells
of the triggers it routed to after its transaction commits, so a hop costs
a wake-up, not half a polling period. Polling (2-50 ms) stays as the
fallback for delayed retries, expired leases and other platforms.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sqlite3
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Sequence

from cloudevents.http import CloudEvent

from doclane.events import codec
from doclane.events.bus import DeadLetter, Delivery, Trigger
from doclane.events.envelope import validate

_SCHEMA = """
CREATE TABLE IF NOT EXISTS triggers (
  name TEXT PRIMARY KEY, types TEXT NOT NULL, max_attempts INTEGER NOT NULL,
  backoff REAL NOT NULL, max_backoff REAL NOT NULL, lease REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS published (
  event_id TEXT PRIMARY KEY, type TEXT NOT NULL, subject TEXT, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  trigger TEXT NOT NULL, event_id TEXT NOT NULL, type TEXT, subject TEXT,
  body BLOB NOT NULL,
  state TEXT NOT NULL DEFAULT 'ready',          -- ready | leased | done | dead
  attempts INTEGER NOT NULL DEFAULT 0,
  available_at REAL NOT NULL, lease_owner TEXT, lease_until REAL,
  created_at REAL NOT NULL, settled_at REAL, last_error TEXT,
  UNIQUE (trigger, event_id)
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (trigger, state, available_at);
CREATE INDEX IF NOT EXISTS messages_owner ON messages (lease_owner) WHERE state = 'leased';
CREATE TABLE IF NOT EXISTS waiters (
  address BLOB PRIMARY KEY, trigger TEXT NOT NULL, pid INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS waiters_trigger ON waiters (trigger);
"""

# Abstract-namespace unix sockets (no file, gone with the process) are Linux's.
DOORBELLS = sys.platform.startswith("linux") and os.environ.get("DOCLANE_BUS_DOORBELLS", "1") != "0"


class SqliteBus:
    def __init__(self, path: str | Path, *, doorbells: bool | None = None):
        self.path = str(path)
        self.doorbells = DOORBELLS if doorbells is None else doorbells and DOORBELLS
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._triggers: dict[str, Trigger] = {}
        self._routes_version = -1
        self._db().executescript(_SCHEMA)  # IF NOT EXISTS: safe from several processes

    # ----------------------------------------------------------------- plumbing
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, *_):
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def _tx(self) -> "_Tx":
        return self._Tx(self._db())

    # ----------------------------------------------------------------- topology
    def declare(self, triggers: Sequence[Trigger]) -> None:
        with self._tx() as db:
            for t in triggers:
                db.execute(
                    "INSERT INTO triggers VALUES (?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
                    "types=excluded.types, max_attempts=excluded.max_attempts, backoff=excluded.backoff, "
                    "max_backoff=excluded.max_backoff, lease=excluded.lease",
                    (t.name, json.dumps(list(t.types)), t.max_attempts, t.backoff_seconds,
                     t.max_backoff_seconds, t.lease_seconds),
                )
        self._load_triggers(force=True)

    def _load_triggers(self, force: bool = False) -> dict[str, Trigger]:
        version = self._db().execute("PRAGMA data_version").fetchone()[0] if not force else -2
        if force or not self._triggers or version != self._routes_version:
            rows = self._db().execute("SELECT name, types, max_attempts, backoff, max_backoff, lease FROM triggers").fetchall()
            self._triggers = {
                r[0]: Trigger(r[0], tuple(json.loads(r[1])), r[2], r[3], r[4], r[5]) for r in rows
            }
            self._routes_version = self._db().execute("PRAGMA data_version").fetchone()[0]
        return self._triggers

    def triggers(self) -> dict[str, Trigger]:
        return dict(self._load_triggers())

    def trigger(self, name: str) -> Trigger:
        t = self._load_triggers().get(name) or self._load_triggers(force=True).get(name)
        if t is None:
            raise KeyError(f"no trigger named {name!r} is declared on this bus")
        return t

    # ----------------------------------------------------------------- publish
    def publish(self, event: CloudEvent) -> bool:
        return self.publish_many([event])[0]

    def publish_many(self, events: Sequence[CloudEvent]) -> list[bool]:
        for event in events:
            validate(event)  # refuse invalid events before anything is written
        triggers = self._load_triggers(force=True).values()
        now = time.time()
        results = []
        routed: set[str] = set()
        with self._tx() as db:
            for event in events:
                eid, etype, subject = event["id"], event["type"], event.get("subject")
                cur = db.execute("INSERT OR IGNORE INTO published VALUES (?,?,?,?)", (eid, etype, subject, now))
                if cur.rowcount == 0:
                    results.append(False)
                    continue
                body = codec.dumps(event)
                for t in triggers:
                    if etype in t.types:
                        routed.add(t.name)
                        db.execute(
                            "INSERT OR IGNORE INTO messages (trigger, event_id, type, subject, body, available_at, created_at) "
                            "VALUES (?,?,?,?,?,?,?)",
                            (t.name, eid, etype, subject, body, now, now),
                        )
                results.append(True)
        self._ring(routed)
        return results

    def enqueue_raw(self, trigger: str, body: bytes, *, event_id: str | None = None) -> None:
        """Put bytes that may not even be a CloudEvent on one trigger's queue
        (what a foreign producer could do); used by tests of the dead-letter path."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO messages (trigger, event_id, body, available_at, created_at) VALUES (?,?,?,?,?)",
                (trigger, event_id or f"raw-{uuid.uuid4()}", body, now, now),
            )
        self._ring([trigger])

    # ----------------------------------------------------------------- consume
    def receive(self, trigger: str, *, max_messages: int = 1, wait_seconds: float = 1.0, owner: str = "") -> list[Delivery]:
        lease = self.trigger(trigger).lease_seconds
        deadline = time.monotonic() + wait_seconds
        pause = 0.002
        while True:
            now = time.time()
            with self._tx() as db:
                rows = db.execute(
                    "SELECT seq, body, attempts FROM messages WHERE trigger=? AND "
                    "((state='ready' AND available_at<=?) OR (state='leased' AND lease_until<=?)) "
                    "ORDER BY available_at, seq LIMIT ?",
                    (trigger, now, now, max_messages),
                ).fetchall()
                for seq, _, _ in rows:
                    db.execute(
                        "UPDATE messages SET state='leased', attempts=attempts+1, lease_owner=?, lease_until=? WHERE seq=?",
                        (owner, now + lease, seq),
                    )
            if rows:
                return [Delivery(trigger, str(seq), bytes(body), attempts + 1) for seq, body, attempts in rows]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            bell = self._doorbell(trigger)
            if bell is None:
                time.sleep(min(pause, remaining))
            elif bell.fresh:
                bell.fresh = False  # registered after the query: look again before sleeping
                continue
            elif select.select([bell.sock], [], [], min(pause, remaining))[0]:
                bell.drain()
                continue  # rung: a publisher committed work for this trigger
            pause = min(pause * 2, 0.05)

    def ack(self, delivery: Delivery) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE messages SET state='done', settled_at=?, lease_owner=NULL WHERE seq=? AND state='leased'",
                (time.time(), int(delivery.tag)),
            )

    def nack(self, delivery: Delivery, reason: str, *, retryable: bool) -> bool:
        t = self.trigger(delivery.trigger)
        dead = not retryable or delivery.attempt >= t.max_attempts
        now = time.time()
        with self._tx() as db:
            if dead:
                db.execute(
                    "UPDATE messages SET state='dead', settled_at=?, last_error=?, lease_owner=NULL WHERE seq=?",
                    (now, reason, int(delivery.tag)),
                )
            else:
                db.execute(
                    "UPDATE messages SET state='ready', available_at=?, last_error=?, lease_owner=NULL WHERE seq=?",
                    (now + t.retry_delay(delivery.attempt), reason, int(delivery.tag)),
                )
        return dead

    def release_owner(self, owner: str) -> int:
        """Make a dead worker's leases deliverable again at once. The attempt it
        used still counts, so a message that kills every worker ends dead-lettered."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE messages SET state='ready', available_at=?, lease_owner=NULL, "
                "last_error='worker exited while handling it' WHERE state='leased' AND lease_owner=?",
                (time.time(), owner),
            )
        if cur.rowcount:
            self._ring(self._load_triggers())
        return cur.rowcount

    def release_all(self) -> int:
        """At start-up no worker is alive: every lease is stale."""
        with self._tx() as db:
            n = db.execute(
                "UPDATE messages SET state='ready', available_at=?, lease_owner=NULL WHERE state='leased'",
                (time.time(),),
            ).rowcount
        if n:
            self._ring(self._load_triggers())
        return n

    # ----------------------------------------------------------------- observe
    def backlog(self, trigger: str) -> int:
        return self._db().execute(
            "SELECT count(*) FROM messages WHERE trigger=? AND state IN ('ready','leased')", (trigger,)
        ).fetchone()[0]

    def ready_now(self, trigger: str) -> int:
        now = time.time()
        return self._db().execute(
            "SELECT count(*) FROM messages WHERE trigger=? AND ((state='ready' AND available_at<=?) "
            "OR (state='leased' AND lease_until<=?))", (trigger, now, now)
        ).fetchone()[0]

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for trigger, state, n in self._db().execute(
            "SELECT trigger, state, count(*) FROM messages GROUP BY trigger, state"
        ):
            out.setdefault(trigger, {})[state] = n
        return out

    def dead_letters(self, trigger: str | None = None) -> list[DeadLetter]:
        sql = "SELECT trigger, event_id, type, subject, last_error, attempts, body, settled_at FROM messages WHERE state='dead'"
        args: tuple = ()
        if trigger:
            sql += " AND trigger=?"
            args = (trigger,)
        return [
            DeadLetter(r[0], r[1], r[2], r[3], r[4] or "", r[5], bytes(r[6]), r[7] or 0.0)
            for r in self._db().execute(sql + " ORDER BY settled_at", args)
        ]

    def requeue_dead(self, trigger: str | None = None, event_ids: Sequence[str] | None = None) -> int:
        """Replay dead letters: back on their queue with a fresh attempt count."""
        sql = "UPDATE messages SET state='ready', attempts=0, available_at=?, last_error=NULL WHERE state='dead'"
        args: list = [time.time()]
        if trigger:
            sql += " AND trigger=?"
            args.append(trigger)
        if event_ids:
            sql += f" AND event_id IN ({','.join('?' * len(event_ids))})"
            args.extend(event_ids)
        with self._tx() as db:
            n = db.execute(sql, args).rowcount
        if n:
            self._ring([trigger] if trigger else self._load_triggers())
        return n

    def prune(self, older_than_seconds: float = 7 * 86400) -> int:
        """Forget settled deliveries. Their event ids stay in `published`, so a
        late duplicate is still recognised."""
        with self._tx() as db:
            return db.execute(
                "DELETE FROM messages WHERE state='done' AND settled_at < ?", (time.time() - older_than_seconds,)
            ).rowcount

    # ----------------------------------------------------------------- doorbells
    def _doorbell(self, trigger: str) -> "_Doorbell | None":
        """This thread's doorbell for the trigger, registered on first use."""
        if not self.doorbells:
            return None
        bells = getattr(self._local, "bells", None)
        if bells is None:
            bells = self._local.bells = {}
        bell = bells.get(trigger)
        if bell is None:
            try:
                bell = _Doorbell()
            except OSError:  # no abstract sockets here (e.g. a sandbox): poll
                return None
            with self._tx() as db:
                db.execute("INSERT OR REPLACE INTO waiters VALUES (?,?,?)", (bell.address, trigger, os.getpid()))
            bells[trigger] = bell
        return bell

    def _ring(self, triggers) -> None:
        """Wake the consumers waiting on these triggers (after the commit, so
        what they look for is there). A doorbell that is gone belonged to a
        process that exited: forget it."""
        names = list(triggers)
        if not DOORBELLS or not names:  # rings even if this instance only polls
            return
        db = self._db()
        rows = db.execute(
            f"SELECT address FROM waiters WHERE trigger IN ({','.join('?' * len(names))})", names
        ).fetchall()
        if not rows:
            return
        sender = getattr(self._local, "sender", None)
        if sender is None:
            sender = self._local.sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sender.setblocking(False)
        gone = []
        for (address,) in rows:
            try:
                sender.sendto(b"!", bytes(address))
            except (ConnectionRefusedError, FileNotFoundError):
                gone.append(address)
            except (BlockingIOError, OSError):
                pass  # its buffer is full of rings already: it is awake
        if gone:
            with self._tx() as tx:
                tx.executemany("DELETE FROM waiters WHERE address=?", [(a,) for a in gone])

    def close(self) -> None:
        bells = getattr(self._local, "bells", None) or {}
        if bells:
            try:
                with self._tx() as db:
                    db.executemany("DELETE FROM waiters WHERE address=?", [(b.address,) for b in bells.values()])
            except sqlite3.Error:
                pass  # closing is best effort; a stale row is dropped on the next ring
            for bell in bells.values():
                bell.sock.close()
            self._local.bells = {}
        sender = getattr(self._local, "sender", None)
        if sender is not None:
            sender.close()
            self._local.sender = None
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class _Doorbell:
    """A datagram socket in Linux's abstract namespace: no file to clean up,
    and a send to it fails with ECONNREFUSED once its process is gone."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind(b"\0doclane-bus-" + uuid.uuid4().hex.encode())
        self.address: bytes = self.sock.getsockname()
        self.fresh = True

    def drain(self) -> None:
        try:
            while True:
                self.sock.recv(64)
        except (BlockingIOError, OSError):
            pass
