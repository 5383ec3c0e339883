"""Supervision of the daemon's long-running background tasks: restart with jittered backoff, log the
cause, and keep a health table that /readyz, /metrics and the retained MQTT status read.

A background task (MQTT bus, API server, checkpointer, shadow) must never end silently: an
unexpected exception is logged as `task.failed` (one line: task, error type, message, next retry),
the task is marked down, and it is started again after a backoff that grows to a cap of a few
seconds (with jitter, so that many daemons do not reconnect in step).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("daemon.supervisor")


class Backoff:
    """Exponential backoff with jitter: each delay is drawn in [d/2, d], d doubling up to `maximum`."""

    def __init__(
        self, *, minimum: float, maximum: float, rng: Callable[[], float] = random.random
    ) -> None:
        self.minimum = minimum
        self.maximum = max(minimum, maximum)
        self._rng = rng
        self._next = minimum

    def reset(self) -> None:
        """Back to the shortest delay (after a connection that worked)."""
        self._next = self.minimum

    def next_delay(self) -> float:
        """The delay to wait now; the following one doubles, up to the cap."""
        base = self._next
        self._next = min(base * 2, self.maximum)
        return base / 2 + self._rng() * base / 2


class TaskHealth:
    """Which supervised tasks are running; a task that failed stays down until it runs again."""

    def __init__(self) -> None:
        self._up: dict[str, bool] = {}
        self.errors: dict[str, str] = {}
        self.restarts: dict[str, int] = {}

    def up(self, name: str) -> None:
        self._up[name] = True
        self.errors.pop(name, None)

    def down(self, name: str, error: str) -> None:
        self._up[name] = False
        self.errors[name] = error
        self.restarts[name] = self.restarts.get(name, 0) + 1

    def states(self) -> dict[str, bool]:
        """Every task seen so far and whether it is running."""
        return dict(self._up)

    def all_up(self) -> bool:
        return all(self._up.values())

    def down_tasks(self) -> dict[str, str]:
        """The tasks that are down, with the error that took them down."""
        return {n: self.errors.get(n, "") for n, ok in self._up.items() if not ok}


def describe(error: BaseException) -> str:
    """An exception as one line: its type and its first message line."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    health: TaskHealth,
    backoff: Backoff,
) -> None:
    """Run `run()` until it returns; on an unexpected exception log it, wait, and run it again."""
    while True:
        health.up(name)
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the supervisor's job: no background task dies quietly
            delay = backoff.next_delay()
            health.down(name, describe(e))
            log.error(
                "task.failed",
                task=name,
                error=describe(e),
                restarts=health.restarts[name],
                retry_seconds=round(delay, 3),
            )
            await asyncio.sleep(delay)
            continue
        return
