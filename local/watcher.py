"""The folder bucket's notifications: watch the inbox, and when a file is
complete (its size and mtime stayed the same for `settle_seconds`), publish
an S3-shaped bucket notification for it. Removed files get ObjectRemoved.

Each file version is notified exactly once: the notification's id is derived
from (key, size, mtime), the bus drops an id it has seen, and what was
notified is kept in a small state file so a restart does not even try again.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from pathlib import Path

from doclane.events.envelope import new_event
from doclane.functions.adapters.folder_store import is_hidden
from doclane.functions.notifications import record_for

log = logging.getLogger("doclane.watcher")
_NAMESPACE = uuid.UUID("9e4b1c7d-2a3f-4b5e-8c6d-7f0a1b2c3d4e")


class FolderWatcher:
    def __init__(self, root: Path, bus, state_path: Path, *, bucket: str = "inbox", settle_seconds: float = 1.0):
        self.root = Path(root).resolve()
        self.bus = bus
        self.bucket = bucket
        self.settle = settle_seconds
        self._pending: dict[str, tuple[int, int, float]] = {}  # key -> (size, mtime_ns, unchanged since)
        self._db = sqlite3.connect(str(state_path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS notified (key TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER)")
        self._notified = {k: (s, m) for k, s, m in self._db.execute("SELECT key, size, mtime_ns FROM notified")}

    def _listing(self) -> dict[str, tuple[int, int]]:
        found = {}
        for path in self.root.rglob("*"):
            try:
                rel = path.relative_to(self.root)
                if is_hidden(rel) or not path.is_file():
                    continue
                st = path.stat()
            except OSError:  # vanished between listing and stat
                continue
            found[rel.as_posix()] = (st.st_size, st.st_mtime_ns)
        return found

    def scan(self) -> int:
        """One pass; returns how many notifications were published."""
        now = time.monotonic()
        listing = self._listing()
        published = 0
        for key, (size, mtime) in listing.items():
            if self._notified.get(key) == (size, mtime):
                self._pending.pop(key, None)
                continue
            seen = self._pending.get(key)
            if seen is None or seen[:2] != (size, mtime):
                self._pending[key] = (size, mtime, now)  # new or still being written
                continue
            if now - seen[2] < self.settle:
                continue
            self._notify("created", key, size, mtime)
            published += 1
        for key in [k for k in self._notified if k not in listing]:
            size, mtime = self._notified[key]
            self._notify("removed", key, size, mtime)
            published += 1
        for key in [k for k in self._pending if k not in listing]:
            del self._pending[key]
        return published

    def _notify(self, action: str, key: str, size: int, mtime: int) -> None:
        record = record_for(action, self.bucket, key, size=size if action == "created" else None,
                            etag=f"{mtime:x}-{size:x}" if action == "created" else None)
        event = new_event("bucket.notification", {"Records": [record]}, subject=None, source="folder-watcher",
                          id=str(uuid.uuid5(_NAMESPACE, f"{action}|{_text(key)}|{size}|{mtime}")))
        self.bus.publish(event)
        if action == "created":
            self._db.execute("INSERT OR REPLACE INTO notified VALUES (?,?,?)", (_text(key), size, mtime))
            self._notified[key] = (size, mtime)
        else:
            self._db.execute("DELETE FROM notified WHERE key=?", (_text(key),))
            self._notified.pop(key, None)
        self._pending.pop(key, None)
        log.info("%s %s (%d bytes)", action, key, size)

    def close(self) -> None:
        self._db.close()


def _text(key: str) -> str:
    """A file name as text that can be hashed and stored: a name that is not
    UTF-8 (the os module gives its bad bytes as lone surrogates) with those
    bytes as \\xNN. The notification itself carries the real bytes, and ingest
    fails the file with the reason (functions/limits.py)."""
    return key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
