"""API keys in the metadata store, on SQLite and the PostgreSQL server."""

from __future__ import annotations

import pytest

from doclane.functions.adapters.sql_keys import ApiKeys, hash_key
from tests.functions.adapters.test_metadata_contract import _backend


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    with _backend(request.param, tmp_path) as b:
        yield b


def test_a_key_is_shown_once_and_stored_only_as_its_hash(backend):
    keys = ApiKeys(backend.open())
    rec, key = keys.create("ci robot")
    assert key.startswith("dl_") and len(key) > 40 and rec.role == "user"
    stored = backend.sql("SELECT key_hash, prefix FROM api_keys")
    assert stored == [(hash_key(key), key[:12])]
    assert key not in repr(stored) and keys.verify(key).id == rec.id


def test_unknown_forged_and_revoked_keys_are_refused(backend):
    keys = ApiKeys(backend.open())
    rec, key = keys.create("alice", "admin")
    assert keys.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert keys.verify("not-a-doclane-key") is None
    assert keys.revoke(rec.id) is True
    assert keys.revoke(rec.id) is False  # twice changes nothing
    assert keys.verify(key) is None
    listed = keys.list()
    assert [(k.name, k.role, k.active) for k in listed] == [("alice", "admin", False)]


def test_revocation_is_seen_by_another_connection(backend):
    """Several processes share the store: a key revoked by the CLI is refused by the server at once."""
    server, cli = ApiKeys(backend.open()), ApiKeys(backend.open())
    rec, key = cli.create("bob")
    assert server.verify(key) is not None
    cli.revoke(rec.id)
    assert server.verify(key) is None and server.get(rec.id).revoked_at


def test_use_is_recorded_and_bad_input_is_refused(backend):
    keys = ApiKeys(backend.open())
    rec, _ = keys.create("carol")
    assert keys.get(rec.id).last_used_at is None
    keys.touch(rec.id)
    first = keys.get(rec.id).last_used_at
    keys.touch(rec.id)  # within a minute: not written again
    assert first and keys.get(rec.id).last_used_at == first
    with pytest.raises(ValueError, match="role"):
        keys.create("dave", "root")
    with pytest.raises(ValueError, match="name"):
        keys.create("  ")
    assert keys.count() == 1
