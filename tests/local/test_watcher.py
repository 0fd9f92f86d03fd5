import logging
import os
import threading
import time

import pytest

from doclane.events import codec
from doclane.events.bus import Trigger
from doclane.local.bus import SqliteBus
from doclane.local.watcher import FolderWatcher


def setup(tmp_path, settle=0.2):
    bus = SqliteBus(tmp_path / "bus.sqlite")
    bus.declare([Trigger("ingest", ("io.doclane.bucket.notification.v1",))])
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    return bus, inbox, FolderWatcher(inbox, bus, tmp_path / "watch.sqlite", settle_seconds=settle)


def drain(bus):
    out = []
    while d := bus.receive("ingest", wait_seconds=0):
        out.append(codec.loads(d[0].body).get_data()["Records"][0])
        bus.ack(d[0])
    return out


def scan_until_quiet(watcher, seconds=0.5):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += watcher.scan()
        time.sleep(0.05)
    return n


def test_a_file_is_notified_once_when_complete(tmp_path):
    bus, inbox, watcher = setup(tmp_path)
    path = inbox / "sub dir" / "report.pdf"
    path.parent.mkdir()
    with open(path, "wb") as fh:  # a slow writer: the file grows across scans
        for _ in range(5):
            fh.write(b"x" * 1000)
            fh.flush()
            assert watcher.scan() == 0
            time.sleep(0.06)
    scan_until_quiet(watcher)
    (rec,) = drain(bus)
    assert rec["eventName"] == "s3:ObjectCreated:Put"
    assert rec["s3"]["object"]["key"] == "sub+dir%2Freport.pdf" and rec["s3"]["object"]["size"] == 5000
    scan_until_quiet(watcher)
    assert drain(bus) == []


def test_hidden_and_partial_files_are_ignored(tmp_path):
    bus, inbox, watcher = setup(tmp_path)
    (inbox / ".hidden").write_text("x")
    (inbox / "download.pdf.part").write_text("x")
    scan_until_quiet(watcher)
    assert drain(bus) == []


def test_restart_does_not_notify_again_but_sees_changes_and_removals(tmp_path):
    bus, inbox, watcher = setup(tmp_path)
    (inbox / "a.txt").write_text("one")
    (inbox / "b.txt").write_text("two")
    scan_until_quiet(watcher)
    assert len(drain(bus)) == 2
    watcher.close()
    watcher = FolderWatcher(inbox, bus, tmp_path / "watch.sqlite", settle_seconds=0.2)
    scan_until_quiet(watcher)
    assert drain(bus) == []
    (inbox / "a.txt").write_text("one, changed")
    os.remove(inbox / "b.txt")
    scan_until_quiet(watcher)
    events = {(r["eventName"], r["s3"]["object"]["key"]) for r in drain(bus)}
    assert events == {("s3:ObjectCreated:Put", "a.txt"), ("s3:ObjectRemoved:Delete", "b.txt")}


def test_lost_watcher_state_is_still_exactly_once(tmp_path):
    """Even if the state file is lost, notification ids derive from the file's
    version, and the bus drops ids it has seen."""
    bus, inbox, watcher = setup(tmp_path)
    (inbox / "a.txt").write_text("one")
    scan_until_quiet(watcher)
    assert len(drain(bus)) == 1
    watcher.close()
    fresh = FolderWatcher(inbox, bus, tmp_path / "other-state.sqlite", settle_seconds=0.2)
    scan_until_quiet(fresh)
    assert drain(bus) == []


# --------------------------------------------------------------------------- file system events (inotify)
def running(tmp_path, settle=60.0, folders=()):
    """A watcher whose settle wait (60 s) cannot explain anything a test
    sees within its few seconds: only the close and rename events can."""
    bus, inbox, watcher = setup(tmp_path, settle=settle)
    for folder in folders:  # there before the watch starts: no race with the watch of a new folder
        (inbox / folder).mkdir()
    if not watcher.watch_events():  # run() keeps the observer started here
        watcher.close()
        pytest.skip("no native file system events here (inotify)")
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    return bus, inbox, watcher, lambda: (stop.set(), thread.join(5), watcher.close())


def wait_for(bus, n, seconds=5.0):
    out, end = [], time.monotonic() + seconds
    while len(out) < n and time.monotonic() < end:
        out += drain(bus)
        time.sleep(0.05)
    return out


def test_a_file_closed_after_writing_is_taken_without_the_settle_wait(tmp_path):
    bus, inbox, watcher, stop = running(tmp_path, folders=("sub",))
    try:
        (inbox / "a.md").write_bytes(b"# one")
        (inbox / "sub" / "b.md").write_bytes(b"# two")
        recs = wait_for(bus, 2)
        assert sorted(r["s3"]["object"]["key"] for r in recs) == ["a.md", "sub%2Fb.md"]
        assert {r["eventName"] for r in recs} == {"s3:ObjectCreated:Put"}
        (inbox / "a.md").write_bytes(b"# one, changed")  # a new version: notified again, once
        (rec,) = wait_for(bus, 1)
        assert rec["s3"]["object"]["key"] == "a.md" and rec["s3"]["object"]["size"] == len(b"# one, changed")
        time.sleep(0.5)
        assert drain(bus) == []
    finally:
        stop()


def test_a_file_renamed_into_the_inbox_is_taken_without_the_settle_wait(tmp_path):
    bus, inbox, watcher, stop = running(tmp_path)
    outside = tmp_path / "elsewhere.md"
    try:
        (inbox / ".c.md.part").write_bytes(b"# three")  # hidden while written
        os.replace(inbox / ".c.md.part", inbox / "c.md")
        outside.write_bytes(b"# four")  # from outside the watched folder
        os.replace(outside, inbox / "d.md")
        recs = wait_for(bus, 2)
        assert sorted(r["s3"]["object"]["key"] for r in recs) == ["c.md", "d.md"]
    finally:
        stop()


def test_a_file_still_open_for_writing_is_not_taken_until_closed(tmp_path):
    bus, inbox, watcher, stop = running(tmp_path)
    try:
        with open(inbox / "slow.pdf", "wb") as fh:
            for _ in range(15):  # 1.5 s of writing, then 1 s open and idle
                fh.write(b"x" * 1000)
                fh.flush()
                time.sleep(0.1)
            time.sleep(1.0)
            assert drain(bus) == []
            # another process reading it meanwhile (a close without writing) does not make it complete
            (inbox / "slow.pdf").read_bytes()
            time.sleep(0.5)
            assert drain(bus) == []
        (rec,) = wait_for(bus, 1)
        assert rec["s3"]["object"]["key"] == "slow.pdf" and rec["s3"]["object"]["size"] == 15000
    finally:
        stop()


def test_without_file_system_events_the_settle_wait_still_takes_a_file(tmp_path, monkeypatch, caplog):
    """The observer failing to start (e.g. inotify's limits) leaves the scan."""
    import watchdog.observers

    def InotifyObserver(**kw):  # noqa: N802 (named as the class it stands for)
        raise OSError(24, "inotify instance limit reached")

    monkeypatch.setattr(watchdog.observers, "Observer", InotifyObserver)
    bus, inbox, watcher = setup(tmp_path, settle=0.3)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    with caplog.at_level(logging.WARNING, logger="doclane.watcher"):
        thread.start()
        try:
            (inbox / "e.md").write_bytes(b"# five")
            (rec,) = wait_for(bus, 1, seconds=5)
            assert rec["s3"]["object"]["key"] == "e.md"
        finally:
            stop.set()
            thread.join(5)
            watcher.close()
    assert "no file system events" in caplog.text and "instance limit" in caplog.text
