"""Small latency recorders: exact percentiles over a bounded ring of recent samples, and a
stage clock that splits one batch's order path into named laps."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

import numpy as np


class LatencyRecorder:
    """Keeps the last `capacity` samples (seconds); percentiles in milliseconds."""

    def __init__(self, *, capacity: int = 100_000) -> None:
        self._buf = np.zeros(capacity, dtype=np.float64)
        self._n = 0
        self._capacity = capacity

    def add(self, seconds: float) -> None:
        self._buf[self._n % self._capacity] = seconds
        self._n += 1

    @property
    def count(self) -> int:
        return self._n

    def percentile_ms(self, q: float) -> float | None:
        n = min(self._n, self._capacity)
        if n == 0:
            return None
        return float(np.percentile(self._buf[:n], q) * 1000.0)

    def samples(self) -> np.ndarray:
        """The kept samples in seconds, oldest first."""
        n = min(self._n, self._capacity)
        start = self._n % self._capacity if self._n > self._capacity else 0
        return np.roll(self._buf[:n], -start)

    def reset(self) -> None:
        self._n = 0


class RunDelay:
    """The calling thread's time spent runnable but waiting for a CPU (Linux schedstat's
    run_delay, seconds): what other processes or threads on a busy machine cost it, which its CPU
    time does not show and its wall time does. None where the kernel does not report it."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._tid: int | None = None

    def read(self) -> float | None:
        tid = threading.get_native_id()
        if tid != self._tid:  # the file names one thread: opened again on a new caller's
            self.close()
            self._tid = tid
            try:
                self._fd = os.open(f"/proc/self/task/{tid}/schedstat", os.O_RDONLY)
            except OSError:
                return None
        if self._fd is None:
            return None
        try:
            # "cpu_ns run_delay_ns timeslices"; pread at 0 renders the file anew (about 1 us)
            return int(os.pread(self._fd, 96, 0).split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return None

    def close(self) -> None:
        fd, self._fd, self._tid = self._fd, None, None
        if fd is not None:
            os.close(fd)


class StageClock:
    """Per-batch time spent in each named stage, as wall time (`stages`), as the calling
    thread's CPU time (`cpu_stages`, which a busy machine inflates far less) and as the time it
    waited for a CPU (`delay_stages`, run-queue delay, with run_delay only; empty where the
    kernel does not report it): wall - cpu - delay is time blocked (a lock, the GIL, an fsync).
    start() when the batch arrives, lap(name) at the end of each stage (the time since the previous
    lap or start goes to `name`).

    run_delay is off by default: a read of /proc per lap (about 2 us) is ~20 us per batch on the
    order path, and only the benchmarks read the split (they pass run_delay=True)."""

    def __init__(
        self, names: Sequence[str], *, capacity: int = 20_000, run_delay: bool = False
    ) -> None:
        self.names = tuple(names)
        self.stages = {name: LatencyRecorder(capacity=capacity) for name in self.names}
        self.cpu_stages = {name: LatencyRecorder(capacity=capacity) for name in self.names}
        self.delay_stages = {name: LatencyRecorder(capacity=capacity) for name in self.names}
        self._wall = self._cpu = 0.0
        self._delay: float | None = None
        self._run_delay = RunDelay() if run_delay else None

    def start(self, at: float) -> None:
        """at: the batch's arrival on the perf_counter clock."""
        self._wall, self._cpu, self._delay = at, time.thread_time(), self._read_delay()

    def lap(self, name: str) -> None:
        wall, cpu, delay = time.perf_counter(), time.thread_time(), self._read_delay()
        self.stages[name].add(wall - self._wall)
        self.cpu_stages[name].add(cpu - self._cpu)
        if delay is not None and self._delay is not None:
            self.delay_stages[name].add(delay - self._delay)
        self._wall, self._cpu, self._delay = wall, cpu, delay

    def _read_delay(self) -> float | None:
        return None if self._run_delay is None else self._run_delay.read()

    def reset(self) -> None:
        for recorder in (
            *self.stages.values(),
            *self.cpu_stages.values(),
            *self.delay_stages.values(),
        ):
            recorder.reset()
