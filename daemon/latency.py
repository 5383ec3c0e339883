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

    def reset(self) -> None:
        self._n = 0


class StageClock:
    """Per-batch seconds spent in each named stage: start() at the batch's arrival, lap(name) at
    the end of each stage (the time since the previous lap or start goes to `name`)."""

    def __init__(self, names: Sequence[str], *, capacity: int = 20_000) -> None:
        self.names = tuple(names)
        self.stages = {name: LatencyRecorder(capacity=capacity) for name in self.names}
        self._last = 0.0

    def start(self, at: float) -> None:
        self._last = at

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.stages[name].add(now - self._last)
        self._last = now

    def reset(self) -> None:
        for recorder in self.stages.values():
            recorder.reset()
