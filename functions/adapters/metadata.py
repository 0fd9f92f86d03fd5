"""Pick the metadata adapter from one setting: a PostgreSQL URL for a server,
anything else that looks like a file for the embedded SQLite default."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

from doclane.functions.adapters.sql_metadata import SqlMetadata
from doclane.functions.errors import ConfigError

_USAGE = ("use postgresql://user@host:5432/dbname, sqlite:///relative/path.db, "
          "sqlite:////absolute/path.db or a plain file path")


def open_metadata(url_or_path: str | os.PathLike[str]) -> SqlMetadata:
    """postgresql:// or postgres:// -> PostgresMetadata; sqlite:///path or a
    path -> SqliteMetadata. Imports lazily so the embedded default needs no
    PostgreSQL driver."""
    target = os.fspath(url_or_path).strip()
    if not target:
        raise ConfigError(f"no metadata store configured: {_USAGE}")
    scheme = urlsplit(target).scheme.lower() if "://" in target else ""
    if scheme in ("postgresql", "postgres"):
        from doclane.functions.adapters.postgres_metadata import PostgresMetadata
        return PostgresMetadata(target)
    if scheme == "sqlite":
        path = unquote(target[len("sqlite:///"):]) if target.lower().startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            raise ConfigError(f"metadata store {target!r} names no file: {_USAGE}")
        target = path
    elif scheme:
        raise ConfigError(f"metadata store {target!r} has unsupported scheme {scheme}://: {_USAGE}")
    from doclane.functions.adapters.sqlite_metadata import SqliteMetadata
    return SqliteMetadata(target)
