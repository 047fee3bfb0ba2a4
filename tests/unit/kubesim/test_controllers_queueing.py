"""The controllers' work queue: de-duplication, dirty requeue, delays, failure back-off."""

from __future__ import annotations

import asyncio

import pytest

from kubesim.controllers.queueing import QueueShutDownError, WorkQueue


async def test_deduplicates_waiting_keys() -> None:
    queue = WorkQueue()
    for key in ("a", "b", "a", "a"):
        queue.add(key)
    assert len(queue) == 2
    assert [await queue.get(), await queue.get()] == ["a", "b"]


async def test_key_added_while_processing_is_requeued_after_done() -> None:
    queue = WorkQueue()
    queue.add("a")
    key = await queue.get()
    queue.add("a")
    assert len(queue) == 0  # not handed to a second worker meanwhile
    queue.done(key)
    assert len(queue) == 1
    assert await queue.get() == "a"
    queue.done("a")
    assert len(queue) == 0


async def test_add_after_keeps_the_earliest_timer() -> None:
    queue = WorkQueue()
    queue.add_after("a", 5)
    queue.add_after("a", 0.01)
    queue.add_after("a", 10)
    key = await asyncio.wait_for(queue.get(), 1)
    assert key == "a"


async def test_rate_limited_retries_grow_and_forget_resets() -> None:
    queue = WorkQueue(retry_base=0.001, retry_max=0.004)
    for _ in range(4):
        queue.add_rate_limited("k")
    assert queue.failures("k") == 4
    assert await asyncio.wait_for(queue.get(), 1) == "k"
    queue.forget("k")
    assert queue.failures("k") == 0


async def test_workers_wake_and_shutdown() -> None:
    queue = WorkQueue()
    got: list[str] = []

    async def worker() -> None:
        while True:
            try:
                key = await queue.get()
            except QueueShutDownError:
                return
            got.append(key)
            queue.done(key)

    tasks = [asyncio.create_task(worker()) for _ in range(3)]
    await asyncio.sleep(0)
    for key in "abcde":
        queue.add(key)
    for _ in range(50):
        if len(got) == 5:
            break
        await asyncio.sleep(0)
    assert sorted(got) == list("abcde")
    queue.shut_down()
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    with pytest.raises(QueueShutDownError):
        await queue.get()
