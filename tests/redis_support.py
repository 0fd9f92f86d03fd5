"""Redis for tests: the server running here (DOCLANE_TEST_REDIS_URL), a broker
name of its own per test, and every key of that broker deleted after.
Unreachable: the tests skip on a laptop and fail when CI is set."""

from __future__ import annotations

import functools
import os
import uuid

from tests.conftest import require

REDIS_URL = os.environ.get("DOCLANE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@functools.cache
def _problem() -> str | None:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
        return None
    except (redis.RedisError, OSError) as exc:
        return repr(exc)


def require_redis() -> None:
    problem = _problem()
    require(problem is None, f"Redis at {REDIS_URL} is unreachable ({problem}); set DOCLANE_TEST_REDIS_URL")


def unique_broker(prefix: str = "test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def broker_keys(broker: str) -> list[bytes]:
    """Every key a RedisBus made for `broker` (all carry the hash tag {broker})."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return list(client.scan_iter(match="{" + broker + "}*", count=1000))
    finally:
        client.close()


def delete_broker(broker: str) -> None:
    import redis

    keys = broker_keys(broker)
    if keys:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            client.delete(*keys)
        finally:
            client.close()
