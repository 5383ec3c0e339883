"""A small latency recorder: exact percentiles over a bounded ring of recent samples."""

from __future__ import annotations

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
