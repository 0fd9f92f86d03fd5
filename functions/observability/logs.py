"""Logs: text for a person at a console, JSON (one object a line) for a log
pipeline, chosen by DOCLANE_LOG_FORMAT=text|json (the container images set
json). A line logged while an event is handled carries the hop's function,
document_id, event_id, trace_id and span_id, whichever logger wrote it: the
hop keeps them in a context variable and a filter on the handler copies them
onto each record (so threads and requests never mix their ids)."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator, TextIO

from doclane.functions.errors import ConfigError

FORMATS = ("text", "json")
FIELDS = ("function", "document_id", "event_id", "trace_id", "span_id")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"

_fields: ContextVar[dict[str, str] | None] = ContextVar("doclane_log_fields", default=None)


@contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Log lines written inside carry `fields` (those that are not None)."""
    token = _fields.set({k: v for k, v in fields.items() if v is not None})
    try:
        yield
    finally:
        _fields.reset(token)


def current() -> dict[str, str]:
    return dict(_fields.get() or {})


def add(**fields: str) -> None:
    """Add to the fields bound now (ingest learns the document id only when
    it has registered the document)."""
    bound_now = _fields.get()
    if bound_now is not None:
        bound_now.update(fields)


class ContextFilter(logging.Filter):
    """Puts the hop's ids on each record (never drops one). On a handler, so
    records from every logger that reaches it get them."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _fields.get()
        if fields:
            for key, value in fields.items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        return True


def json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    # timestamp: ISO 8601 in UTC; the hop's fields follow as extra attributes.
    return JsonFormatter("%(levelname)s %(name)s %(process)d %(message)s", timestamp=True,
                         rename_fields={"levelname": "level", "name": "logger"})


def log_format(value: str | None = None) -> str:
    """The format asked for (argument, else DOCLANE_LOG_FORMAT, else text)."""
    fmt = (value or os.environ.get("DOCLANE_LOG_FORMAT") or "text").strip().lower()
    if fmt not in FORMATS:
        raise ConfigError(f"DOCLANE_LOG_FORMAT={fmt!r} is not valid: use text or json")
    return fmt


def configure(level: int = logging.INFO, *, fmt: str | None = None, text_format: str = TEXT_FORMAT,
              stream: TextIO | None = None) -> logging.Handler:
    """One handler on the root logger, replacing any earlier one of ours (what
    logging.basicConfig did, plus the format choice and the hop's ids)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(json_formatter() if log_format(fmt) == "json" else logging.Formatter(text_format))
    handler.addFilter(ContextFilter())
    handler._doclane = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_doclane", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
