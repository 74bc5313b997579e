"""The worker side's writers pack commands with hiredis: every kind of argument redis-py
sends goes through, on the blocking and the asyncio client alike, against a real
redis-server."""

from __future__ import annotations

import pytest

from sse_tasks.brokers.redis import RedisBroker
from sse_tasks.engines import AsyncWriter, SyncWriter

pytest.importorskip("hiredis")
pytestmark = pytest.mark.anyio


def _url(redis_url: str, db: int) -> str:
    return redis_url.rsplit("/", 1)[0] + f"/{db}"


def test_the_blocking_writer_packs_every_argument(redis_url: str, redis_db: int) -> None:
    writer = SyncWriter(RedisBroker(_url(redis_url, redis_db)))
    client = writer.client
    try:
        assert client.connection_pool.connection_class.__name__.startswith("Hiredis")
        assert client.set("k", "välue") and client.get("k") == "välue".encode()
        assert client.zadd("z", {"a": 1.5}) == 1 and client.zscore("z", "a") == 1.5  # a float
        assert client.execute_command("CONFIG GET", "maxmemory")  # two words in one
        with client.pipeline(transaction=False) as pipe:
            pipe.incr("n", 2).hset("h", mapping={"x": b"\x00\xff", "y": 7}).hgetall("h")
            assert pipe.execute() == [2, 2, {b"x": b"\x00\xff", b"y": b"7"}]
    finally:
        writer.close()


async def test_the_asyncio_writer_packs_every_argument(redis_url: str, redis_db: int) -> None:
    writer = AsyncWriter(RedisBroker(_url(redis_url, redis_db)))
    client = writer.client
    try:
        assert client.connection_pool.connection_class.__name__.startswith("Hiredis")
        assert await client.set("k", "välue") and await client.get("k") == "välue".encode()
        assert await client.zadd("z", {"a": 1.5}) == 1 and await client.zscore("z", "a") == 1.5
        assert await client.execute_command("CONFIG GET", "maxmemory")
        async with client.pipeline(transaction=False) as pipe:
            pipe.incr("n", 2).hset("h", mapping={"x": b"\x00\xff", "y": 7}).hgetall("h")
            assert await pipe.execute() == [2, 2, {b"x": b"\x00\xff", b"y": b"7"}]
    finally:
        await writer.close()
