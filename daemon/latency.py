"""Small latency recorders: exact percentiles over a bounded ring of recent samples, and a
stage clock that splits one batch's order path into named laps."""

from __future__ import annotations

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


class StageClock:
    """Per-batch time spent in each named stage, as wall time (`stages`) and as the calling
    thread's CPU time (`cpu_stages`, which a busy machine inflates far less): start() when the
    batch arrives, lap(name) at the end of each stage (the time since the previous lap or start
    goes to `name`)."""

    def __init__(self, names: Sequence[str], *, capacity: int = 20_000) -> None:
        self.names = tuple(names)
        self.stages = {name: LatencyRecorder(capacity=capacity) for name in self.names}
        self.cpu_stages = {name: LatencyRecorder(capacity=capacity) for name in self.names}
        self._wall = self._cpu = 0.0

    def start(self, at: float) -> None:
        """at: the batch's arrival on the perf_counter clock."""
        self._wall, self._cpu = at, time.thread_time()

    def lap(self, name: str) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        self.stages[name].add(wall - self._wall)
        self.cpu_stages[name].add(cpu - self._cpu)
        self._wall, self._cpu = wall, cpu

    def reset(self) -> None:
        for recorder in (*self.stages.values(), *self.cpu_stages.values()):
            recorder.reset()
