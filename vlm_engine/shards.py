"""How the pure core hands out independent pieces of work (walk-forward folds, backtest contenders).

A TaskMap runs `fn(item, **shared)` for every item and returns the results in the items' order.
`run_locally` is the default (a plain loop in this process); the daemon's `--ray` passes a map
that runs each item as a Ray task (daemon/cluster/tasks.py). `shared` holds the inputs every item
reads (arrays, configs); a distributed map ships each once, not once per item. `fn` must be a
module-level function so that a worker on another machine can import it by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

R = TypeVar("R")


class TaskMap(Protocol):
    """[fn(item, **shared) for item in items], however and wherever it runs."""

    def __call__(
        self,
        fn: Callable[..., R],
        items: Sequence[Any],
        *,
        shared: Mapping[str, Any],
        desc: str = "",
        weights: Sequence[int] | None = None,
    ) -> list[R]: ...


def run_locally(
    fn: Callable[..., R],
    items: Sequence[Any],
    *,
    shared: Mapping[str, Any],
    desc: str = "",
    weights: Sequence[int] | None = None,
) -> list[R]:
    """The items one after another in this process (desc and weights: for a progress bar elsewhere)."""
    del desc, weights
    return [fn(item, **shared) for item in items]
