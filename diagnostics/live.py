"""Live job events: the worker appends to a Redis stream per job, the SSE view reads it.

The database is the record; the stream only carries "something changed" to open pages, so a
Redis outage loses liveness (pages still show the truth on reload), never data.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from functools import cache
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings

log = logging.getLogger(__name__)

STREAM_MAXLEN = 5000
STREAM_TTL = 24 * 3600


def stream_key(job_id: int) -> str:
    return f"kaiketsu:job:{job_id}:events"


@cache
def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2)


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


async def follow(
    job_id: int, after: str, block_ms: int = 15000
) -> AsyncIterator[tuple[str, str, dict[str, Any]] | None]:
    """Yield (id, event, data) after ``after``; None after each quiet block (for keep-alives)."""
    client = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
    key = stream_key(job_id)
    try:
        while True:
            batch = await client.xread({key: after}, block=block_ms, count=100)
            if not batch:
                yield None
                continue
            for entry_id, fields in batch[0][1]:
                after = entry_id.decode()
                yield after, fields[b"event"].decode(), json.loads(fields[b"data"])
    finally:
        await client.aclose()
