"""Thread priorities: one call run at a scheduling policy, on whichever thread makes it, and
normal again after; and the threads whose work no order waits for, lowered for good.

The one place that raises a thread and lowers it back (daemon/runtime.py OrderPathPriority hands
the order path's work to the scorer's thread with it, vlm_engine/infer/engine.py the CLIP pool's
chunks of that work), and the one that lowers a background thread (the journal's writer, the
WAL checkpointers, the explainer). Linux only: elsewhere nothing is raised or lowered.
"""

from __future__ import annotations

import os
import threading
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


# How much nicer than the process a background thread runs: at +10 it weighs 110 against a
# normal thread's 1024, so a batch's threads take the CPU from it at once, and it still runs
# within milliseconds when the CPU is free (a starved thread holding the GIL or a write lock
# would hold up the order path: SCHED_IDLE measured worse for that, nice +10 did not).
BACKGROUND_NICE = 10


def lower_calling_thread() -> bool:
    """The calling thread BACKGROUND_NICE nicer than it is, for good (no privilege needed; only
    root could raise it back): for a thread that only ever does work no order waits for and
    starts no thread the order path uses (a thread inherits its creator's nice value). False
    where a thread has no nice value of its own (not Linux)."""
    if FIFO < 0:  # not Linux
        return False
    tid = threading.get_native_id()
    try:
        nice = os.getpriority(os.PRIO_PROCESS, tid)  # Linux: PRIO_PROCESS with a thread's id
        os.setpriority(os.PRIO_PROCESS, tid, min(19, nice + BACKGROUND_NICE))
    except OSError:
        return False
    return True
