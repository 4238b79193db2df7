"""Redis pipelines whose clean-up a cancel cannot cut short.

``async with redis.pipeline()`` resets the pipeline on exit: an ``UNWATCH`` when it watched a key, then the
connection goes back to the pool and the pipeline forgets it. Those steps await, so a cancel that arrives
then (a job's heartbeat task stopped as its attempt ends, a request whose client went away) leaves the
pipeline holding a connection the pool already has back; when the pipeline is collected, redis-py warns of
an unclosed client and closes that connection under whoever uses it next. Here the reset runs shielded: it
finishes, and the cancel is raised after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline


@asynccontextmanager
async def pipeline(redis: Redis, *, transaction: bool) -> AsyncIterator[Pipeline]:
    """``redis.pipeline(transaction=transaction)``, reset on exit even when a cancel arrives meanwhile."""
    pipe = redis.pipeline(transaction=transaction)
    try:
        yield pipe
    finally:
        await asyncio.shield(pipe.reset())
