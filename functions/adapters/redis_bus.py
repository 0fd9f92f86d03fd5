"""The event bus on Redis Streams (redis-py), with the semantics of the
embedded bus (local/bus.py) and RabbitBus (rabbitmq_bus.py): the same
topology, acknowledgement, back-off and dead-letter policy.

Keys (every key of a broker carries the hash tag `{<broker>}`: the keys a Lua
script touches are named in its KEYS and share one slot, as Redis Cluster would
require; this adapter itself connects to one server. Names come from
events/bus.py, like RabbitMQ's queues):

  {doclane}:triggers          hash   trigger name -> its types and retry policy (routing table)
  {doclane}.<trigger>         stream a trigger's queue; consumer group `<trigger>`, consumer = the
                                     worker's owner name
  {doclane}.<trigger>.retry   zset   deliveries waiting for their back-off, scored by due time (ms)
  {doclane}.<trigger>.dlq     stream dead letters: body, reason, attempts, event id/type/subject, at
  {doclane}:seen:<event id>   string published event ids (SET NX, expiring after `dedup_seconds`)

- publish: one Lua script per event sets the id's `seen` key (NX) and XADDs
  the event to the stream of every trigger whose types name it, atomically:
  a duplicate id publishes nothing and returns False. Why not the metadata
  store, as RabbitBus does? RabbitMQ cannot check and enqueue in one step, so
  there two processes racing on one id may both publish, and a crash between
  the broker's confirm and the store's insert forgets an id; in one script
  neither can happen, and publishing needs no database round trip. The price
  is that ids are remembered for `dedup_seconds` (a week by default), not
  forever; a duplicate later than that still meets idempotent handlers.
- receive: first due retries go back on the stream and deliveries a consumer
  held past the trigger's `lease_seconds` are taken over (XAUTOCLAIM: a worker
  that died, even by SIGKILL, loses nothing), one script; then XREADGROUP for
  new entries, blocking up to `wait_seconds` (or until the next retry is due)
  and up to `max_messages` at once. The attempt number is the entry's
  `attempts` (earlier deliveries that ended in a retry) + its delivery count.
- ack: XACK. nack: XACK and, in the same script, a copy in the retry zset
  (due after the trigger's back-off) or in the dead-letter stream with the
  reason and attempts; a delivery another consumer took over meanwhile is
  left to it (nack returns False). The supervisor's `release_owner` moves a
  finished worker's deliveries to the retry zset, due at once (the attempt it
  used still counts), and deletes its consumer.
- retention: an acked entry stays in its stream (XRANGE shows what went
  through) until trimmed to about `maxlen` entries (XTRIM MAXLEN ~) and/or
  `max_age_seconds` (XTRIM MINID ~), on publish. A plain MAXLEN would also cut
  entries not yet delivered or acked when a backlog outgrows it; here the trim
  never reaches past the oldest unsettled entry, so a stream holds more than
  `maxlen` while its backlog does. Dead-letter streams are never trimmed.
- Not done: a `release_all` at start-up. Another `doclane up` may share the
  broker, so a consumer's deliveries are only taken over once its lease ran
  out (or its supervisor released them).

Threads: the redis-py client is thread-safe and reconnects by itself; a lost
server raises Retryable. Delivery tags are `<entry id>|<consumer>`, so a
delivery can be settled from any thread or bus object.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
from typing import Any, Callable, Sequence

import redis
from cloudevents.http import CloudEvent

from doclane.events import codec
from doclane.events.bus import (BROKER, DeadLetter, Delivery, Trigger, dead_letter_queue_name, queue_name,
                                retry_queue_name)
from doclane.events.envelope import validate
from doclane.functions.errors import ConfigError, Retryable

log = logging.getLogger("doclane.redis_bus")

DEFAULT_MAXLEN = 10_000
DEFAULT_DEDUP_SECONDS = 7 * 86400
_MAX_BLOCK_SECONDS = 5.0  # one XREADGROUP blocks at most this long (below the socket timeout)
_SOCKET_TIMEOUT = 30.0
_PROMOTE_BATCH = 100  # due retries moved back per receive
_RELEASE_BATCH = 1000

# Lua helpers shared by the scripts: Redis' clock (one clock for every client),
# stream ids compared as (ms, seq), and the safe trim.
_LIB = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function before(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local function after(id)
  local ms, seq = parse(id)
  return string.format('%.0f-%.0f', ms, seq + 1)
end
local function fields(flat)
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  return f
end
-- Every entry before the returned id was delivered to every group and acked.
local function settled_before(stream)
  local floor = nil
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local f = fields(g)
    local bound = after(f['last-delivered-id'])
    if f['pending'] > 0 then
      local oldest = redis.call('XPENDING', stream, f['name'])[2]
      if before(oldest, bound) then bound = oldest end
    end
    if floor == nil or before(bound, floor) then floor = bound end
  end
  return floor or '0-1'
end
-- Retention: about maxlen entries and/or max_age_ms of history, never an unsettled entry.
local function trim(stream, maxlen, max_age_ms)
  local floor = nil
  if maxlen > 0 then
    local excess = redis.call('XLEN', stream) - maxlen
    if excess > 0 then
      floor = settled_before(stream)
      local old = redis.call('XRANGE', stream, '-', '(' .. floor, 'COUNT', math.min(excess, 1000))
      if #old == excess then
        redis.call('XTRIM', stream, 'MAXLEN', '~', maxlen)
      elseif #old > 0 then
        redis.call('XTRIM', stream, 'MINID', '~', after(old[#old][1]))
      end
    end
  end
  if max_age_ms > 0 then
    local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
    local oldest = now_ms() - max_age_ms
    if #first > 0 and parse(first[1][1]) < oldest then
      floor = floor or settled_before(stream)
      local bound = string.format('%.0f-0', oldest)
      if before(floor, bound) then bound = floor end
      redis.call('XTRIM', stream, 'MINID', '~', bound)
    end
  end
end
"""

# KEYS: seen key, the streams of the triggers that want the type.
# ARGV: dedup seconds, maxlen, max age ms, body. Returns 1, or 0 for a duplicate.
_PUBLISH = _LIB + """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 2, #KEYS do
  redis.call('XADD', KEYS[i], '*', 'body', ARGV[4], 'attempts', '0')
  trim(KEYS[i], tonumber(ARGV[2]), tonumber(ARGV[3]))
end
return 1
"""

# KEYS: stream, retry zset. ARGV: group, consumer, lease ms, count, maxlen, max age ms, XAUTOCLAIM cursor.
# Returns {{id, fields, delivery count}...} taken over, ids of entries lost, ms to the next due retry (-1: none),
# the cursor to go on from (XAUTOCLAIM scans count * 10 pending entries per call).
_PREPARE = _LIB + """
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, %d)
for _, m in ipairs(due) do
  local r = cmsgpack.unpack(m)
  redis.call('XADD', KEYS[1], '*', 'body', r[1], 'attempts', r[2])
  redis.call('ZREM', KEYS[2], m)
end
if #due > 0 then trim(KEYS[1], tonumber(ARGV[5]), tonumber(ARGV[6])) end
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[7], 'COUNT', ARGV[4])
local out = {}
for _, e in ipairs(claimed[2]) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
  table.insert(out, {e[1], e[2], p[1][4]})
end
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local wait = -1
if #nxt > 0 then wait = math.max(tonumber(nxt[2]) - now, 0) end
return {out, claimed[3] or {}, wait, claimed[1]}
""" % _PROMOTE_BATCH

# KEYS: stream, retry zset, dead-letter stream.
# ARGV: group, entry id, consumer, dead (1/0), delay ms, body, attempts, reason, event id, type, subject.
# Returns 1 dead-lettered, 0 retry scheduled, -1 not held by this consumer (any more).
_NACK = _LIB + """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return -1 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
local now = now_ms()
if ARGV[4] == '1' then
  redis.call('XADD', KEYS[3], '*', 'body', ARGV[6], 'attempts', ARGV[7], 'reason', ARGV[8],
             'event_id', ARGV[9], 'type', ARGV[10], 'subject', ARGV[11], 'at', string.format('%.0f', now))
  return 1
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), cmsgpack.pack({ARGV[6], ARGV[7], ARGV[2]}))
return 0
"""

# KEYS: stream, retry zset. ARGV: group, consumer. Moves the consumer's deliveries to the
# retry zset, due now, counting the attempt it used; deletes the consumer once it holds none.
_RELEASE = _LIB + """
local now = now_ms()
local held = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', %d, ARGV[2])
for _, p in ipairs(held) do
  local e = redis.call('XRANGE', KEYS[1], p[1], p[1])
  if #e > 0 then
    local f = fields(e[1][2])
    local attempts = tonumber(f['attempts'] or '0') + p[4]
    redis.call('ZADD', KEYS[2], now, cmsgpack.pack({f['body'] or '', tostring(attempts), p[1]}))
  end
  redis.call('XACK', KEYS[1], ARGV[1], p[1])
end
if #held < %d then redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end
return #held
""" % (_RELEASE_BATCH, _RELEASE_BATCH)

# KEYS: stream, retry zset, dead-letter stream. ARGV: group, lease ms.
# Returns {waiting, pending, delayed, delayed and due, pending past the lease (at most 100), dead}.
_COUNTS = _LIB + """
local waiting, pending, expired = 0, 0, 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local f = fields(g)
    if f['name'] == ARGV[1] then
      pending = f['pending']
      if f['lag'] then
        waiting = f['lag']
      else  -- Redis cannot tell after an XDEL inside the range: count
        waiting = #redis.call('XRANGE', KEYS[1], '(' .. f['last-delivered-id'], '+')
      end
      if pending > 0 then
        expired = #redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[2], '-', '+', 100)
      end
    end
  end
end
return {waiting, pending, redis.call('ZCARD', KEYS[2]), redis.call('ZCOUNT', KEYS[2], '-inf', now_ms()),
        expired, redis.call('XLEN', KEYS[3])}
"""

# KEYS: stream, dead-letter stream. ARGV: the dead letter's id. Back on the queue with a fresh attempt count.
_REQUEUE = _LIB + """
local e = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])
if #e == 0 then return 0 end
local f = fields(e[1][2])
redis.call('XADD', KEYS[1], '*', 'body', f['body'] or '', 'attempts', '0')
redis.call('XDEL', KEYS[2], ARGV[1])
return 1
"""

# KEYS: stream. ARGV: group, idle ms. Deletes consumers that hold nothing and were idle that long
# (each worker start is a new consumer name); in a script, so none reads between the check and the delete.
_TIDY = _LIB + """
local gone = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = fields(c)
  if f['pending'] == 0 and f['idle'] >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    gone = gone + 1
  end
end
return gone
"""


class RedisBus:
    def __init__(self, url: str, broker: str = BROKER, *, triggers: Sequence[Trigger] = (),
                 maxlen: int = DEFAULT_MAXLEN, max_age_seconds: float = 0.0,
                 dedup_seconds: float = DEFAULT_DEDUP_SECONDS):
        self.url = url
        self.broker = broker
        self.maxlen = maxlen  # 0: no length limit
        self.max_age_ms = int(max_age_seconds * 1000)  # 0: no age limit
        self.dedup_seconds = max(int(dedup_seconds), 1)
        try:
            self._client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=_SOCKET_TIMEOUT,
                                                health_check_interval=30)
        except ValueError as exc:
            raise ConfigError(f"DOCLANE_REDIS_URL={url!r} is not a Redis URL ({exc}); "
                              "e.g. redis://127.0.0.1:6379/0") from None
        kw = self._client.connection_pool.connection_kwargs
        self._where = kw.get("path") or f"{kw.get('host', '?')}:{kw.get('port', 6379)}"  # never the password
        self._triggers = {t.name: t for t in triggers}
        self._tag = "{" + broker + "}"
        script = self._client.register_script
        self._publish_script, self._prepare, self._nack = script(_PUBLISH), script(_PREPARE), script(_NACK)
        self._release, self._counts, self._requeue = script(_RELEASE), script(_COUNTS), script(_REQUEUE)
        self._tidy = script(_TIDY)
        self._default_owner = f"{socket.gethostname()}-{os.getpid()}"
        # Where each trigger's scan for expired leases goes on: from the start every time,
        # live deliveries at the head of a long pending list would hide the dead ones behind.
        self._cursors: dict[str, bytes | str] = {}

    @classmethod
    def from_settings(cls, settings, *, triggers: Sequence[Trigger] = ()) -> "RedisBus":
        if not settings.redis_url:
            raise ConfigError("DOCLANE_BUS=redis needs DOCLANE_REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
        return cls(settings.redis_url, settings.broker, triggers=triggers, maxlen=settings.redis_stream_maxlen,
                   max_age_seconds=settings.redis_stream_max_age, dedup_seconds=settings.redis_dedup_seconds)

    # ----------------------------------------------------------------- plumbing
    def _stream(self, trigger: str) -> str:
        return queue_name(trigger, self._tag)

    def _delayed(self, trigger: str) -> str:
        return retry_queue_name(trigger, self._tag)

    def _dlq(self, trigger: str) -> str:
        return dead_letter_queue_name(trigger, self._tag)

    @property
    def _routes_key(self) -> str:
        return f"{self._tag}:triggers"

    def _seen(self, event_id: str) -> str:
        return f"{self._tag}:seen:{event_id}"

    def _run(self, op: Callable[[], Any], trigger: str | None = None) -> Any:
        """Run a Redis call; a lost server becomes Retryable, a missing group a KeyError."""
        try:
            return op()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise Retryable(f"Redis at {self._where} is unreachable: {exc}") from None
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                raise KeyError(f"no stream for trigger {trigger!r} on broker {self.broker!r}; "
                               "declare the triggers first") from None
            raise

    # ----------------------------------------------------------------- topology
    def declare(self, triggers: Sequence[Trigger]) -> None:
        """The routing table, and a stream with its consumer group per trigger; idempotent."""
        self._triggers.update({t.name: t for t in triggers})

        def op() -> None:
            for t in triggers:
                self._client.hset(self._routes_key, t.name, json.dumps(dataclasses.asdict(t)))
                try:
                    self._client.xgroup_create(self._stream(t.name), t.name, id="0", mkstream=True)
                except redis.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
                # consumers of workers long gone (their deliveries were released or taken over)
                self._tidy(keys=[self._stream(t.name)], args=[t.name, int(max(t.lease_seconds, 3600) * 1000)])

        self._run(op)

    def _declared(self) -> dict[str, Trigger]:
        raw = self._run(lambda: self._client.hgetall(self._routes_key))
        out = {}
        for name, spec in raw.items():
            fields = json.loads(spec)
            out[name.decode()] = Trigger(**{**fields, "types": tuple(fields["types"])})
        return out

    def triggers(self) -> dict[str, Trigger]:
        return {**self._declared(), **self._triggers}

    def trigger(self, name: str) -> Trigger:
        t = self._triggers.get(name) or self._declared().get(name)
        if t is None:
            raise KeyError(f"no trigger named {name!r} is declared on broker {self.broker!r}")
        self._triggers.setdefault(name, t)
        return t

    # ----------------------------------------------------------------- publish
    def publish(self, event: CloudEvent) -> bool:
        return self.publish_many([event])[0]

    def publish_many(self, events: Sequence[CloudEvent]) -> list[bool]:
        for event in events:
            validate(event)  # refuse invalid events before anything is written
        if not events:
            return []
        routes = self._declared().values()  # what every process declared, not only this one

        def op() -> list:
            pipe = self._client.pipeline(transaction=False)
            for event in events:
                streams = [self._stream(t.name) for t in routes if event["type"] in t.types]
                self._publish_script(keys=[self._seen(event["id"]), *streams],
                                     args=[self.dedup_seconds, self.maxlen, self.max_age_ms, codec.dumps(event)],
                                     client=pipe)
            return pipe.execute()

        return [bool(r) for r in self._run(op)]

    def enqueue_raw(self, trigger: str, body: bytes) -> None:
        """Put bytes that may not even be a CloudEvent on one trigger's stream,
        as a foreign producer could (tests of the dead-letter path)."""
        self._run(lambda: self._client.xadd(self._stream(trigger), {"body": body, "attempts": 0}))

    # ----------------------------------------------------------------- consume
    def receive(self, trigger: str, *, max_messages: int = 1, wait_seconds: float = 1.0, owner: str = "") -> list[Delivery]:
        t = self.trigger(trigger)
        consumer = owner or self._default_owner
        deadline = time.monotonic() + wait_seconds
        while True:
            out, next_due_ms = self._take_over(t, consumer, max_messages)
            block = None  # no BLOCK: answer at once (BLOCK 0 would wait for ever)
            remaining = deadline - time.monotonic()
            if not out and remaining > 0:
                # Woken by a new entry, else back in time for the next due retry, and soon
                # after a lease may have run out (XAUTOCLAIM is a poll, not an event).
                wait = min(remaining, _MAX_BLOCK_SECONDS, t.lease_seconds / 4)
                if next_due_ms >= 0:
                    wait = min(wait, next_due_ms / 1000)
                block = max(int(wait * 1000), 1)
            if len(out) < max_messages:
                out += self._read(t, consumer, max_messages - len(out), block)
            if out or time.monotonic() >= deadline:
                return out

    def _take_over(self, t: Trigger, consumer: str, count: int) -> tuple[list[Delivery], int]:
        """Due retries back on the stream; deliveries held past the lease, ours now."""
        claimed, lost, next_due_ms, self._cursors[t.name] = self._run(lambda: self._prepare(
            keys=[self._stream(t.name), self._delayed(t.name)],
            args=[t.name, consumer, int(t.lease_seconds * 1000), count, self.maxlen, self.max_age_ms,
                  self._cursors.get(t.name, "0-0")]), t.name)
        if lost:  # trimmed while pending: cannot happen with the safe trim, but say so if it does
            log.error("%s: %d pending entries were deleted from the stream before they were settled: %s",
                      t.name, len(lost), [i.decode() for i in lost])
        out = [self._delivery(t.name, consumer, entry_id, _pairs(flat), deliveries)
               for entry_id, flat, deliveries in claimed]
        if out:
            log.warning("%s: took over %d deliveries not settled within the %gs lease", t.name, len(out), t.lease_seconds)
        return out, int(next_due_ms)

    def _read(self, t: Trigger, consumer: str, count: int, block: int | None) -> list[Delivery]:
        stream = self._stream(t.name)
        resp = self._run(lambda: self._client.xreadgroup(t.name, consumer, {stream: ">"}, count=count, block=block),
                         t.name)
        return [self._delivery(t.name, consumer, entry_id, fields, 1)
                for _, entries in (resp or []) for entry_id, fields in entries]

    @staticmethod
    def _delivery(trigger: str, consumer: str, entry_id: bytes, fields: dict, deliveries: int) -> Delivery:
        attempts = int(fields.get(b"attempts") or 0)  # deliveries of earlier copies that ended in a retry
        return Delivery(trigger, f"{entry_id.decode()}|{consumer}", fields.get(b"body", b""), attempts + int(deliveries))

    def ack(self, delivery: Delivery) -> None:
        entry_id, _, _ = delivery.tag.partition("|")
        # Acked whoever holds it now: the work is done (another consumer's later ack is a no-op).
        self._run(lambda: self._client.xack(self._stream(delivery.trigger), delivery.trigger, entry_id))

    def nack(self, delivery: Delivery, reason: str, *, retryable: bool) -> bool:
        t = self.trigger(delivery.trigger)
        dead = not retryable or delivery.attempt >= t.max_attempts
        entry_id, _, consumer = delivery.tag.partition("|")
        event_id, type_, subject = _describe(delivery.body)
        settled = self._run(lambda: self._nack(
            keys=[self._stream(t.name), self._delayed(t.name), self._dlq(t.name)],
            args=[t.name, entry_id, consumer, int(dead), int(t.retry_delay(delivery.attempt) * 1000), delivery.body,
                  delivery.attempt, reason[:4000], event_id or "", type_ or "", subject or ""]), t.name)
        if settled < 0:
            log.warning("%s delivery %s is no longer held by this consumer (its lease ran out and another "
                        "took it over, or it was settled already); left as it is", t.name, delivery.tag)
            return False
        return dead

    def release_owner(self, owner: str) -> int:
        """A worker is gone: its deliveries are due again at once (the attempt
        it used still counts), and its consumer is deleted."""
        released = 0
        for name in self.triggers():
            while True:
                try:
                    n = self._run(lambda: self._release(keys=[self._stream(name), self._delayed(name)],
                                                        args=[name, owner]), name)
                except KeyError:  # not declared: nothing held
                    break
                released += n
                if n < _RELEASE_BATCH:
                    break
        return released

    # ----------------------------------------------------------------- observe
    def _count(self, t: Trigger) -> dict[str, int]:
        waiting, pending, delayed, due, expired, dead = self._run(lambda: self._counts(
            keys=[self._stream(t.name), self._delayed(t.name), self._dlq(t.name)],
            args=[t.name, int(t.lease_seconds * 1000)]), t.name)
        return {"waiting": waiting, "pending": pending, "delayed": delayed, "due": due, "expired": expired, "dead": dead}

    def backlog(self, trigger: str) -> int:
        """Waiting, in progress (pending in the group, any consumer) and delayed."""
        c = self._count(self.trigger(trigger))
        return c["waiting"] + c["pending"] + c["delayed"]

    def ready_now(self, trigger: str) -> int:
        """Deliverable now: waiting, retries due, and deliveries whose lease ran out."""
        c = self._count(self.trigger(trigger))
        return c["waiting"] + c["due"] + c["expired"]

    def counts(self) -> dict[str, dict[str, int]]:
        """Per trigger: ready, delayed (waiting for a retry), leased (held by any consumer) and dead."""
        out = {}
        for t in self.triggers().values():
            c = self._count(t)
            out[t.name] = {"ready": c["waiting"] + c["due"], "delayed": c["delayed"] - c["due"],
                           "leased": c["pending"], "dead": c["dead"]}
        return out

    def dead_letters(self, trigger: str | None = None) -> list[DeadLetter]:
        names = [trigger] if trigger else list(self.triggers())
        letters = [_dead_letter(name, _pairs_dict(fields))
                   for name in names for _, fields in self._run(lambda: self._client.xrange(self._dlq(name)))]
        return sorted(letters, key=lambda dl: dl.at)

    def requeue_dead(self, trigger: str | None = None, event_ids: Sequence[str] | None = None) -> int:
        """Replay dead letters: back on their trigger's stream with a fresh attempt count."""
        wanted = set(event_ids or ())
        names = [trigger] if trigger else list(self.triggers())
        replayed = 0
        for name in names:
            for entry_id, fields in self._run(lambda: self._client.xrange(self._dlq(name))):
                if wanted and (fields.get(b"event_id") or b"").decode() not in wanted:
                    continue
                replayed += self._run(lambda: self._requeue(keys=[self._stream(name), self._dlq(name)],
                                                            args=[entry_id]))
        return replayed

    def close(self) -> None:
        try:
            self._client.close()
        except redis.RedisError:
            pass  # closing is best effort: unacked deliveries stay pending and are taken over


def _pairs(flat: list) -> dict:
    """A stream entry's fields as Lua returns them (flat) as redis-py does (a dict)."""
    return dict(zip(flat[::2], flat[1::2]))


def _pairs_dict(fields: dict) -> dict[str, str]:
    return {k.decode(): v for k, v in fields.items()}


def _describe(body: bytes) -> tuple[str | None, str | None, str | None]:
    """id, type and subject of a structured CloudEvent, as far as the bytes are one."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None, None
    if not isinstance(obj, dict):
        return None, None, None
    return tuple(v if isinstance(v, str) and v else None for v in (obj.get("id"), obj.get("type"), obj.get("subject")))


def _dead_letter(trigger: str, f: dict[str, bytes]) -> DeadLetter:
    def text(name: str) -> str | None:
        return f[name].decode("utf-8", "replace") if f.get(name) else None

    return DeadLetter(trigger=trigger, event_id=text("event_id"), type=text("type"), subject=text("subject"),
                      reason=text("reason") or "", attempts=int(f.get("attempts") or 0), body=bytes(f.get("body", b"")),
                      at=int(f.get("at") or 0) / 1000)
