"""Running one call at a scheduling policy, on whichever thread makes it, and normal again after.

The one place that raises a thread and lowers it back (daemon/runtime.py OrderPathPriority hands
the order path's work to the scorer's thread with it, vlm_engine/infer/engine.py the CLIP pool's
chunks of that work). Linux only: elsewhere nothing is ever raised.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

FIFO = getattr(os, "SCHED_FIFO", -1)  # -1: no real-time policy on this platform
RESET_ON_FORK = getattr(os, "SCHED_RESET_ON_FORK", 0)
# Normal again; reset on fork, so nothing started from a raised thread inherits a raised policy.
NORMAL = getattr(os, "SCHED_OTHER", 0) | RESET_ON_FORK


def at_policy(fn: Callable[P, T], policy: int, param: os.sched_param) -> Callable[P, T]:
    """fn, run at `policy` by the thread that calls it and normal again when it returns or
    raises. Refused (not expected: the caller handing the work over was granted it), fn runs at
    normal priority."""

    def raised(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            os.sched_setscheduler(0, policy, param)  # 0: the calling thread
        except OSError:
            return fn(*args, **kwargs)
        try:
            return fn(*args, **kwargs)
        finally:
            os.sched_setscheduler(0, NORMAL, os.sched_param(0))  # lowering is always allowed

    return raised
