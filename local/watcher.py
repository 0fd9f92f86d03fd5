"""The folder bucket's notifications: watch the inbox, and when a file is
complete, publish an S3-shaped bucket notification for it. Removed files get
ObjectRemoved.

A file is complete when the file system says so: its writer closed it after
writing (inotify's IN_CLOSE_WRITE) or it was renamed into the inbox (the
write-then-rename convention); it is taken at once. Where no such event
comes (files already there at start, a platform or file system without
inotify, an event queue that overflowed, a file written again before it
was taken) the fallback decides: a scan every `scan_seconds`, and
a file whose size and mtime stayed the same for `settle_seconds`.

Each file version is notified exactly once: the notification's id is derived
from (key, size, mtime), the bus drops an id it has seen, and what was
notified is kept in a small state file so a restart does not even try again.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
import time
import uuid
from pathlib import Path

from doclane.events.envelope import new_event
from doclane.functions.adapters.folder_store import is_hidden
from doclane.functions.notifications import record_for

log = logging.getLogger("doclane.watcher")
_NAMESPACE = uuid.UUID("9e4b1c7d-2a3f-4b5e-8c6d-7f0a1b2c3d4e")


class FolderWatcher:
    def __init__(self, root: Path, bus, state_path: Path, *, bucket: str = "inbox", settle_seconds: float = 1.0,
                 scan_seconds: float = 0.5):
        self.root = Path(root).resolve()
        self.bus = bus
        self.bucket = bucket
        self.settle = settle_seconds
        self.scan_seconds = scan_seconds
        self._pending: dict[str, tuple[int, int, float]] = {}  # key -> (size, mtime_ns, unchanged since)
        # key -> (size, mtime_ns) when its writer closed it or it was renamed in (filled by the observer's thread)
        self._complete: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._observer = None
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

    def run(self, stop: threading.Event) -> None:
        """Until `stop`: take each file the file system reports complete as
        soon as it does, and scan every `scan_seconds` for the rest."""
        self.watch_events()
        next_scan = 0.0
        while not stop.is_set():
            self._wake.clear()  # an event from here on wakes the wait below
            try:
                if time.monotonic() >= next_scan:
                    next_scan = time.monotonic() + self.scan_seconds
                    self.scan()
                else:
                    self.take_complete()
            except Exception:
                log.exception("inbox scan failed; trying again")
            self._wake.wait(max(next_scan - time.monotonic(), 0.0))

    def watch_events(self) -> bool:
        """Start the platform's file system events for the inbox (inotify on
        Linux); without them (or if they fail to start) the scan alone decides."""
        if self._observer is not None:
            return True
        try:
            from watchdog.observers import Observer

            if Observer.__name__ == "PollingObserver":  # no native events here: our own scan polls already
                raise OSError("no native file system events on this platform")
            # full events: a file renamed in from outside the inbox is a move, not a create
            observer = Observer(generate_full_events=True) if Observer.__name__ == "InotifyObserver" else Observer()
            observer.schedule(_Events(self), str(self.root), recursive=True)
            observer.daemon = True
            observer.start()
        except Exception as exc:  # e.g. inotify's watch or instance limit
            log.warning("no file system events for %s (%s): a file is taken once it stayed unchanged for %.1f s",
                        self.root, exc, self.settle)
            return False
        self._observer = observer
        return True

    def _event(self, path: str, complete: bool) -> None:
        """From the observer's thread: `path` is complete (closed after
        writing, renamed in) or it was written, replaced or removed (whatever
        was said about it before no longer holds; opening it to read is no
        change, and a version that changes is not taken anyway)."""
        try:
            rel = Path(path).relative_to(self.root)
        except ValueError:
            return
        if not rel.parts or is_hidden(rel):
            return
        key = rel.as_posix()
        version = None
        if complete:
            try:
                st = os.stat(path)
                if stat.S_ISREG(st.st_mode):
                    version = (st.st_size, st.st_mtime_ns)
            except OSError:
                pass
        with self._lock:
            if version is None:
                self._complete.pop(key, None)
            else:
                self._complete[key] = version
        if version is not None:
            self._wake.set()

    def take_complete(self) -> int:
        """Notify the files reported complete that are still as they were
        then; returns how many notifications were published."""
        with self._lock:
            complete, self._complete = self._complete, {}
        published = 0
        for key, version in complete.items():
            try:
                st = (self.root / key).stat()
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or (st.st_size, st.st_mtime_ns) != version:
                continue  # changed since: the settle wait decides
            if self._notified.get(key) != version:
                self._notify("created", key, *version)
                published += 1
        return published

    def scan(self) -> int:
        """One pass; returns how many notifications were published."""
        published = self.take_complete()
        now = time.monotonic()
        listing = self._listing()
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
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
            self._observer = None
        self._wake.set()
        self._db.close()


class _Events:
    """watchdog's handler for the inbox (dispatch is all watchdog calls)."""

    def __init__(self, watcher: FolderWatcher):
        self.watcher = watcher

    def dispatch(self, event) -> None:
        if event.is_directory:
            return
        try:
            kind = event.event_type
            if kind == "closed":  # IN_CLOSE_WRITE: closed after writing (a reader's close is "closed_no_write")
                self.watcher._event(event.src_path, complete=True)
            elif kind == "moved":
                if event.src_path:
                    self.watcher._event(event.src_path, complete=False)
                if event.dest_path:  # renamed into or within the inbox; not the moves made up for a moved folder's files
                    self.watcher._event(event.dest_path, complete=not event.is_synthetic)
            elif kind in ("modified", "created", "deleted"):  # written (or truncated) again, replaced, gone
                self.watcher._event(event.src_path, complete=False)
        except Exception:  # an exception here would stop the observer's thread
            log.exception("inbox event %r", event)


def _text(key: str) -> str:
    """A file name as text that can be hashed and stored: a name that is not
    UTF-8 (the os module gives its bad bytes as lone surrogates) with those
    bytes as \\xNN. The notification itself carries the real bytes, and ingest
    fails the file with the reason (functions/limits.py)."""
    return key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
