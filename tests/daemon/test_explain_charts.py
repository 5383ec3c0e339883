"""The chart files: one per content hash, resolved only inside the charts dir, pruned by age and count."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from daemon.explain.charts import ChartStore
from daemon.explain.config import ExplainConfig
from daemon.explain.worker import Explainer

DAY = 86_400


def _aged(store: ChartStore, payload: bytes, days_old: float, now: float) -> str:
    digest = store.put(payload)
    path = store.directory / f"{digest}.png"
    os.utime(path, (now - days_old * DAY, now - days_old * DAY))
    return digest


def test_put_when_same_content_twice_then_one_file_named_by_its_sha256(tmp_path: Path) -> None:
    store = ChartStore(directory=tmp_path / "charts")
    first = store.put(b"png-bytes")
    assert store.put(b"png-bytes") == first == hashlib.sha256(b"png-bytes").hexdigest()
    assert [p.name for p in (tmp_path / "charts").iterdir()] == [f"{first}.png"]
    assert store.read(first) == b"png-bytes"


def test_prune_when_charts_older_than_max_age_then_deleted(tmp_path: Path) -> None:
    store = ChartStore(directory=tmp_path / "charts")
    now = time.time()
    old = [_aged(store, f"old{i}".encode(), 40, now) for i in range(3)]
    new = [_aged(store, f"new{i}".encode(), 1, now) for i in range(2)]
    assert store.prune(max_charts=100, max_age_days=30, now=now) == 3
    assert all(store.path(d) is None for d in old)
    assert all(store.path(d) is not None for d in new)


def test_prune_when_over_max_charts_then_oldest_go_first(tmp_path: Path) -> None:
    store = ChartStore(directory=tmp_path / "charts")
    now = time.time()
    digests = [_aged(store, f"c{i}".encode(), 10 - i, now) for i in range(6)]  # c0 oldest
    assert store.prune(max_charts=4, max_age_days=30, now=now) == 2
    assert [store.path(d) is not None for d in digests] == [False, False, True, True, True, True]


def test_explainer_when_started_then_retention_runs_over_existing_charts(tmp_path: Path) -> None:
    store = ChartStore(directory=tmp_path / "charts")
    now = time.time()
    stale = _aged(store, b"stale", 3, now)
    fresh = _aged(store, b"fresh", 0, now)
    with Explainer(config=ExplainConfig(max_age_days=2), state_dir=tmp_path):
        pass
    assert store.path(stale) is None
    assert store.path(fresh) is not None


@pytest.mark.parametrize(
    "name",
    ["../charts", "/etc/passwd", "a" * 63, "A" * 64, "g" * 64, "a" * 64 + "\x00", "a" * 65, ""],
)
def test_path_when_not_a_lowercase_sha256_then_none(tmp_path: Path, name: str) -> None:
    store = ChartStore(directory=tmp_path / "charts")
    store.put(b"x")
    assert store.path(name) is None
