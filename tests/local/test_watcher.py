import os
import time

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
