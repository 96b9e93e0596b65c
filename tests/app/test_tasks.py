"""`cancel_and_wait`: children are stopped and awaited; the caller's own cancellation is not
swallowed (the old ``suppress(BaseException)`` loops swallowed it)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from adapters._tasks import cancel_and_wait


async def slow_to_stop(stopped: list[str]) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        await asyncio.sleep(0.05)  # cleanup that takes a while (e.g. an end-of-stream message)
        stopped.append("child")


async def test_children_are_cancelled_and_awaited() -> None:
    stopped: list[str] = []
    children = [asyncio.create_task(slow_to_stop(stopped)) for _ in range(3)]
    await asyncio.sleep(0)
    await cancel_and_wait(children)
    assert stopped == ["child"] * 3 and all(c.cancelled() for c in children)


async def test_the_callers_cancellation_propagates_after_the_children_are_gone() -> None:
    stopped: list[str] = []
    child = asyncio.create_task(slow_to_stop(stopped))

    async def owner() -> None:
        await asyncio.sleep(0)
        await cancel_and_wait([child])
        stopped.append("owner carried on")  # must not happen: the owner was cancelled

    task = asyncio.create_task(owner())
    await asyncio.sleep(0.01)  # the owner now waits for its child's cleanup
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert child.done() and stopped == ["child"], "no leak, and the owner stopped"


async def test_a_childs_error_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    child = asyncio.create_task(broken())
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING):
        await cancel_and_wait([child, None, asyncio.current_task()])
    assert "failed while being stopped" in caplog.text and "boom" in caplog.text
