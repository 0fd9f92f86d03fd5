"""A token bucket per key: `burst` requests at once, refilled at `rate` per
second. `take(key)` answers 0 when the request may go, else the seconds until
one token is back (the Retry-After).

In memory for one process (`doclane up` serves HTTP from one process); in
Redis when DOCLANE_REDIS_URL is set, so several gateway replicas share one
bucket per key. The Redis version is one Lua script, so the read-refill-take
is atomic on the server and needs no lock between replicas.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Protocol


class RateLimiter(Protocol):
    def take(self, key: str) -> float:
        """0.0 if allowed (a token was taken); else seconds to wait."""
        ...


class MemoryBuckets:
    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        self.rate, self.burst, self._clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


# KEYS[1] bucket hash; ARGV: rate, burst, now (seconds, float). Returns the
# wait in milliseconds (0 = allowed). Redis' own clock would be better, but
# TIME in scripts is only allowed with effects replication; the gateways'
# clocks are close enough for a rate limit.
_LUA = """
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(b[1]) or burst, tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate * 1000) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait
"""


class RedisBuckets:
    def __init__(self, url: str, rate: float, burst: int, prefix: str = "doclane:ratelimit:"):
        import redis  # only needed when configured

        self.rate, self.burst, self.prefix = rate, burst, prefix
        self._client = redis.Redis.from_url(url)
        self._script = self._client.register_script(_LUA)

    def take(self, key: str) -> float:
        wait_ms = self._script(keys=[self.prefix + key], args=[self.rate, self.burst, time.time()])
        return int(wait_ms) / 1000.0


def from_settings(settings) -> RateLimiter:
    if settings.redis_url:
        return RedisBuckets(settings.redis_url, settings.rate_limit, settings.rate_burst)
    return MemoryBuckets(settings.rate_limit, settings.rate_burst)


def retry_after(wait: float) -> str:
    """The Retry-After header: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait)))
