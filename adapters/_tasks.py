"""Structured concurrency for the gateway's few background tasks: one way to stop them.

`cancel_and_wait` replaces the ``for t in tasks: t.cancel(); suppress(BaseException): await t``
loops, which swallowed the *caller's* own cancellation: a task cancelled while it waited for
its children carried on as if nothing happened. Here the children are cancelled and awaited
(nothing leaks), their own errors are logged, and a cancellation of the caller is re-raised
once they are gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger(__name__)


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any] | None], *,
                          expected: tuple[type[BaseException], ...] = ()) -> None:
    """Cancel `tasks` (the caller's own task and finished ones are skipped) and wait until
    each has ended. If the caller is cancelled meanwhile, the children are still awaited,
    then the `CancelledError` propagates. A task's failure is logged unless it is one of the
    `expected` types (e.g. a client that left)."""
    current = asyncio.current_task()
    pending = {task for task in tasks if task is not None and task is not current}
    for task in pending:
        task.cancel()
    cancelled = False
    waiting = {task for task in pending if not task.done()}
    while waiting:
        try:
            await asyncio.wait(waiting)
        except asyncio.CancelledError:
            # Ours: let the children finish their cleanup (they were cancelled already;
            # cancelling again would cut it short), then re-raise.
            cancelled = True
        waiting = {task for task in waiting if not task.done()}
    for task in pending:
        if not task.cancelled() and task.exception() is not None \
                and not isinstance(task.exception(), expected):
            logger.warning("task %s failed while being stopped", _name(task),
                           exc_info=task.exception())
    if cancelled:
        raise asyncio.CancelledError


def _name(task: asyncio.Future[Any]) -> str:
    return task.get_name() if isinstance(task, asyncio.Task) else repr(task)
