"""The token bucket: in memory with a fake clock, and in the Redis server."""

from __future__ import annotations

import uuid

import pytest

from doclane.functions.ratelimit import MemoryBuckets, RedisBuckets, retry_after
from tests.conftest import require

REDIS_URL = "redis://127.0.0.1:6379/15"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_burst_then_the_refill_rate():
    clock = Clock()
    buckets = MemoryBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k") == pytest.approx(0.5)  # one token comes back in 1/rate s
    clock.now += 0.5
    assert buckets.take("k") == 0.0
    assert buckets.take("k") > 0
    clock.now += 100  # a long pause refills only up to the burst
    assert [buckets.take("k") == 0.0 for _ in range(4)] == [True, True, True, False]


def test_each_key_has_its_own_bucket():
    buckets = MemoryBuckets(rate=1.0, burst=1, clock=Clock())
    assert buckets.take("alice") == 0.0 and buckets.take("alice") > 0
    assert buckets.take("bob") == 0.0


def test_retry_after_is_whole_seconds_at_least_one():
    assert retry_after(0.01) == "1" and retry_after(1.2) == "2"


def _redis(rate, burst):
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # any failure to reach it
        require(False, f"Redis at {REDIS_URL} is unreachable: {exc}")
    return RedisBuckets(REDIS_URL, rate, burst, prefix=f"doclane-test:{uuid.uuid4().hex}:")


def test_redis_buckets_share_one_limit_across_gateways():
    one, two = _redis(0.5, 3), None
    two = RedisBuckets(REDIS_URL, 0.5, 3, prefix=one.prefix)  # a second replica, same keys
    taken = [one.take("k"), two.take("k"), one.take("k")]
    assert taken == [0.0, 0.0, 0.0]
    wait = two.take("k")
    assert 1.0 < wait <= 2.0  # at 0.5/s the next token is about 2 s away
    assert one.take("other") == 0.0
