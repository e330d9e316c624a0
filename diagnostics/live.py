"""Live job events: the worker appends to a Redis stream per job, the SSE view reads it.

The database is the record; the stream only carries "something changed" to open pages, so a
Redis outage loses liveness (pages still show the truth on reload), never data.

Every open page follows its job's stream, but they do not each hold a Redis connection: one
reader per web process (per event loop) reads all followed streams with one XREAD and hands
each page its entries, so a thousand open pages cost Redis one client (issue #16).
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncIterator
from functools import cache
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings

log = logging.getLogger(__name__)

STREAM_MAXLEN = 5000
STREAM_TTL = 24 * 3600


# How long the shared reader blocks in one XREAD: a page that starts following waits at most
# this long for its first read (it loses nothing meanwhile: reads start from its position).
READ_BLOCK_MS = 500


def stream_key(job_id: int) -> str:
    return f"{settings.KAIKETSU_REDIS_PREFIX}:job:{job_id}:events"


@cache
def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, **settings.REDIS_TIMEOUTS)


def publish(job_id: int, event: str, data: dict[str, Any]) -> str | None:
    """Append an event; returns its stream id, or None when Redis is unavailable."""
    key = stream_key(job_id)
    try:
        pipe = _client().pipeline()
        pipe.xadd(key, {"event": event, "data": json.dumps(data)}, maxlen=STREAM_MAXLEN)
        pipe.expire(key, STREAM_TTL)
        entry_id, _ = pipe.execute()
    except redis.RedisError as exc:
        log.warning("live events for job %s not published: %s", job_id, exc)
        return None
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


def discard(job_id: int) -> None:
    """Drop any stream left under this job id (e.g. after the database was reset)."""
    try:
        _client().delete(stream_key(job_id))
    except redis.RedisError as exc:
        log.warning("live events for job %s not reset: %s", job_id, exc)


def last_id(job_id: int) -> str:
    """The id of the newest event so far ("0" when none): the page resumes after it."""
    try:
        newest = _client().xrevrange(stream_key(job_id), count=1)
    except redis.RedisError:
        return "0"
    if not newest:
        return "0"
    entry_id = newest[0][0]
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


class LiveUnavailable(Exception):
    """Redis stopped answering while a page followed a job: the page should reconnect later."""


def _position(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)


class _Follower:
    """One page following one stream: its own position and the entries waiting for it."""

    def __init__(self, key: str, after: str) -> None:
        self.key, self.after = key, after
        self.queue: asyncio.Queue[tuple[str, str, dict[str, Any]] | Exception] = asyncio.Queue()

    def deliver(self, entries: list) -> None:
        for raw_id, fields in entries:
            entry_id = raw_id.decode()
            if _position(entry_id) > _position(self.after):  # the shared read may start earlier
                self.after = entry_id
                event, data = fields[b"event"].decode(), json.loads(fields[b"data"])
                self.queue.put_nowait((entry_id, event, data))


class _Reader:
    """The one Redis reader of an event loop: XREAD over every followed stream at once."""

    def __init__(self) -> None:
        self.followers: dict[str, set[_Follower]] = {}
        self.task: asyncio.Task | None = None
        self.client: aioredis.Redis | None = None

    def join(self, follower: _Follower) -> None:
        self.followers.setdefault(follower.key, set()).add(follower)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    def leave(self, follower: _Follower) -> None:
        group = self.followers.get(follower.key)
        if group is not None:
            group.discard(follower)
            if not group:
                del self.followers[follower.key]

    def _positions(self) -> dict[str, str]:
        """Per stream, the earliest position among its followers."""
        return {
            key: min((f.after for f in group), key=_position)
            for key, group in self.followers.items()
        }

    async def _run(self) -> None:
        if self.client is None:
            # The read blocks READ_BLOCK_MS on purpose: only a wait beyond that is a stall.
            timeouts = dict(settings.REDIS_TIMEOUTS)
            timeouts["socket_timeout"] = timeouts["socket_timeout"] + READ_BLOCK_MS / 1000
            self.client = aioredis.Redis.from_url(settings.REDIS_URL, **timeouts)
        try:
            while self.followers:
                batch = await self.client.xread(self._positions(), block=READ_BLOCK_MS, count=100)
                for key, entries in batch or ():
                    for follower in list(self.followers.get(key.decode(), ())):
                        follower.deliver(entries)
        except Exception as exc:  # whatever stops the reader must not leave pages waiting
            log.warning("live events unavailable: %s", exc)
            for group in self.followers.values():
                for follower in group:
                    follower.queue.put_nowait(LiveUnavailable(str(exc)))
            self.followers.clear()


_readers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Reader] = (
    weakref.WeakKeyDictionary()
)


def _reader() -> _Reader:
    loop = asyncio.get_running_loop()
    if loop not in _readers:
        _readers[loop] = _Reader()
    return _readers[loop]


async def follow(
    job_id: int, after: str, block_ms: int = 15000
) -> AsyncIterator[tuple[str, str, dict[str, Any]] | None]:
    """Yield (id, event, data) after ``after``; None after each quiet block (for keep-alives).

    Raises LiveUnavailable when Redis stops answering (the page reconnects and resumes).
    """
    reader, follower = _reader(), _Follower(stream_key(job_id), after)
    reader.join(follower)
    try:
        while True:
            try:
                item = await asyncio.wait_for(follower.queue.get(), block_ms / 1000)
            except TimeoutError:
                yield None
                continue
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        reader.leave(follower)
