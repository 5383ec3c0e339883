"""RayTaskMap: the core's TaskMap (vlm_engine.shards) with every item a Ray task.

Shared inputs go to the object store once (`ray.put`) and every task reads them from there; an
input named in `from_path` is not shipped at all: the worker loads it from a path every node sees
(bars_input.py). Each task is retried `max_retries` times when its worker dies; results come back
in the items' order, and one tqdm bar counts them as they finish, whichever node ran them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import structlog
from tqdm import tqdm

from daemon.cluster.bars_input import PathInput, resolve_inputs
from daemon.cluster.errors import ClusterError

log = structlog.get_logger("daemon.cluster")
R = TypeVar("R")


def _call(fn: Callable[..., R], item: Any, **shared: Any) -> R:
    """The worker's side of one task: path-backed inputs loaded (cached per worker), then fn."""
    return fn(item, **resolve_inputs(shared))


class RayTaskMap:
    """TaskMap over a connected Ray (see ray_session)."""

    def __init__(
        self,
        *,
        ray: Any,
        max_retries: int,
        progress: bool = True,
        from_path: Mapping[str, PathInput] | None = None,
    ) -> None:
        self.ray = ray
        self.max_retries = max_retries
        self.progress = progress
        self.from_path = dict(from_path or {})
        self.tasks = 0
        self.seconds = 0.0

    def __call__(
        self,
        fn: Callable[..., R],
        items: Sequence[Any],
        *,
        shared: Mapping[str, Any],
        desc: str = "",
        weights: Sequence[int] | None = None,
    ) -> list[R]:
        ray = self.ray
        started = time.perf_counter()
        refs = {
            k: self.from_path[k] if k in self.from_path else ray.put(v) for k, v in shared.items()
        }
        remote = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)(_call)
        pending = [remote.remote(fn, item, **refs) for item in items]
        index = {ref: i for i, ref in enumerate(pending)}
        steps = list(weights) if weights is not None else [1] * len(items)
        results: list[Any] = [None] * len(items)
        with tqdm(
            total=sum(steps), desc=desc or "tasks", file=sys.stderr, disable=not self.progress
        ) as bar:
            waiting = list(pending)
            while waiting:
                done, waiting = ray.wait(waiting, num_returns=1)
                i = index[done[0]]
                try:
                    results[i] = ray.get(done[0])
                except ray.exceptions.RayTaskError as e:  # the work itself raised: as it would here
                    raise (e.cause if isinstance(e.cause, Exception) else e) from None
                except ray.exceptions.RayError as e:  # workers or nodes lost beyond the retries
                    msg = (
                        f"ray task {desc or fn.__name__} #{i} lost after {self.max_retries} "
                        f"retries: {_first_line(e)}"
                    )
                    raise ClusterError(msg) from None
                bar.update(steps[i])
        seconds = time.perf_counter() - started
        self.tasks += len(items)
        self.seconds += seconds
        log.info("ray.tasks_finished", what=desc or fn.__name__, tasks=len(items),
                 seconds=round(seconds, 3))  # fmt: skip
        return results


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
