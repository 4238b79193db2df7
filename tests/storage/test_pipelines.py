"""A pipeline's reset finishes even when a second cancel arrives during it, against a real Redis: the
connection goes back to the pool and the pipeline lets go of it (else redis-py closes it, when the pipeline
is collected, under whoever uses it next)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from mt_storage.pipelines import pipeline


async def test_a_cancel_during_the_reset_still_returns_the_connection(redis: Redis) -> None:
    watching = asyncio.Event()
    held: list[Pipeline] = []

    async def hold() -> None:
        async with pipeline(redis, transaction=True) as pipe:
            held.append(pipe)
            await pipe.watch("mt:test:pipeline")
            watching.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold())
    await asyncio.wait_for(watching.wait(), 10)
    (pipe,) = held

    def released() -> bool:
        return pipe.connection is None and not pipe.watching

    assert not released()
    task.cancel()
    await asyncio.sleep(0)  # the task is in its reset now, awaiting the UNWATCH's answer
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):  # the shielded reset finishes on its own
        if released():
            break
        await asyncio.sleep(0.01)
    assert released()
    assert await redis.ping()
