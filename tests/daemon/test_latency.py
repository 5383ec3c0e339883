"""The stage clock's split of a batch's wall time: CPU, run delay (waiting for a CPU), the rest."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from daemon.latency import RunDelay, StageClock


@pytest.fixture
def one_cpu_shared_with_a_busy_process() -> Iterator[None]:
    """This thread and a process that never sleeps pinned to the same CPU: the thread must wait
    for it whenever it wants to run."""
    cpu = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(hog.pid, {cpu})
        os.sched_setaffinity(0, {cpu})  # 0: the calling thread
        yield
    finally:
        os.sched_setaffinity(0, before)
        hog.kill()
        hog.wait()


def _spin(cpu_seconds: float) -> None:
    started = time.thread_time()
    while time.thread_time() - started < cpu_seconds:
        pass


@pytest.mark.usefixtures("one_cpu_shared_with_a_busy_process")
def test_run_delay_when_the_cpu_is_shared_with_a_busy_process_then_it_grows() -> None:
    delay = RunDelay()
    try:
        before = delay.read()
        _spin(0.2)  # 200 ms of CPU next to a process that wants the CPU all the time
        after = delay.read()
    finally:
        delay.close()
    assert before is not None
    assert after is not None
    # The hog ran for part of the time this thread was runnable: the kernel counted that wait.
    assert after - before > 0.0


def test_run_delay_when_read_on_another_thread_then_that_threads_own_file() -> None:
    delay = RunDelay()
    tids: list[int | None] = []

    def read() -> None:
        delay.read()
        tids.append(delay._tid)  # the thread the open file describes

    try:
        delay.read()
        main = delay._tid
        worker = threading.Thread(target=read)
        worker.start()
        worker.join()
    finally:
        delay.close()
    assert main == threading.get_native_id()
    assert tids == [worker.native_id]


@pytest.mark.usefixtures("one_cpu_shared_with_a_busy_process")
def test_stage_clock_when_a_stage_waits_for_the_cpu_then_its_run_delay_is_recorded() -> None:
    clock = StageClock(("quick", "contended"), run_delay=True)
    clock.start(time.perf_counter())
    clock.lap("quick")
    _spin(0.2)
    clock.lap("contended")
    assert clock.delay_stages["quick"].count == clock.delay_stages["contended"].count == 1
    assert (clock.delay_stages["contended"].percentile_ms(50) or 0.0) > 0.0
    clock.reset()
    assert clock.delay_stages["contended"].count == 0


def test_stage_clock_when_run_delay_not_asked_for_then_laps_record_wall_and_cpu_only() -> None:
    """The daemon's clock: no /proc read per lap on the order path."""
    clock = StageClock(("quick",))
    clock.start(time.perf_counter())
    clock.lap("quick")
    assert clock.stages["quick"].count == clock.cpu_stages["quick"].count == 1
    assert clock.delay_stages["quick"].count == 0
