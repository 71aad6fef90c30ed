"""The stall watchdog's pieces: loop steps and where suspended tasks wait."""

from __future__ import annotations

import asyncio

from streams.watchdog import Steps, awaiting, pending_tasks


def test_steps_say_what_each_loop_does_and_since_when() -> None:
    steps = Steps()
    steps.at("writes", "writing Redis")
    steps.at("input", "restoring hiring-0")
    steps.at("input", "processing 10 messages")
    text = steps.describe()
    assert text.startswith("input: processing 10 messages for 0 s; writes: writing Redis for")


async def test_pending_tasks_name_the_innermost_frame() -> None:
    gate = asyncio.Event()

    async def inner() -> None:
        await gate.wait()

    async def outer() -> None:
        await inner()

    task = asyncio.create_task(outer(), name="held-up")
    await asyncio.sleep(0)
    try:
        where = awaiting(task.get_coro())
        # Frames outside this package are left out but the innermost: here asyncio's wait.
        assert where.endswith(" wait"), where
        assert "held-up: " in pending_tasks()
    finally:
        gate.set()
        await task
