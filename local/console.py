"""Live progress on the console: documents per status, queue depth and
running processes per function, throughput."""

from __future__ import annotations

import time

from rich.console import Group
from rich.table import Table
from rich.text import Text

STATUSES = ("uploaded", "classified", "extracted", "indexed", "failed")


class Progress:
    def __init__(self):
        self.started = time.monotonic()
        self.first_done: float | None = None

    def snapshot(self, metadata, bus, supervisor) -> dict:
        stats = metadata.stats()
        queues = bus.counts() if hasattr(bus, "counts") else {}
        done = stats["status"].get("indexed", 0) + stats["status"].get("failed", 0)
        bounds = getattr(supervisor, "bounds", {})
        return {"status": stats["status"], "category": stats.get("category", {}), "queues": queues,
                "running": supervisor.running(), "max": {name: b.max for name, b in bounds.items()}, "done": done}

    def render(self, snap: dict):
        total = sum(snap["status"].values())
        done = snap["done"]
        bar_width = 30
        filled = int(bar_width * done / total) if total else 0
        elapsed = time.monotonic() - self.started
        head = Text.assemble(
            ("doclane ", "bold"), f"[{'█' * filled}{'░' * (bar_width - filled)}] ",
            (f"{done}/{total} done", "green"), f"  {elapsed:,.0f}s",
        )
        docs = Table.grid(padding=(0, 2))
        docs.add_row(*[Text(s, style="dim") for s in STATUSES])
        docs.add_row(*[str(snap["status"].get(s, 0)) for s in STATUSES])
        stages = Table("function", "queued", "in progress", "processes/max", "dead-lettered", box=None)
        for name, running in snap["running"].items():
            q = snap["queues"].get(name, {})
            stages.add_row(name, str(q.get("ready", 0)), str(q.get("leased", 0)), _processes(snap, name),
                           str(q.get("dead", 0)))
        return Group(head, docs, stages)

    def line(self, snap: dict) -> str:
        s = snap["status"]
        return "progress: " + ", ".join(f"{k}={s.get(k, 0)}" for k in STATUSES) + \
            " | queued: " + ", ".join(f"{n}={q.get('ready', 0) + q.get('leased', 0)}" for n, q in snap["queues"].items()) + \
            " | processes: " + ", ".join(f"{n}={_processes(snap, n)}" for n in snap["running"])


def _processes(snap: dict, name: str) -> str:
    """Running processes of a function, and its ceiling when known: "2/4"."""
    ceiling = snap.get("max", {}).get(name)
    return f"{snap['running'][name]}/{ceiling}" if ceiling else str(snap["running"][name])
