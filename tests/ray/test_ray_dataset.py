"""`dataset build --ray`: the charts rendered as Ray tasks on the two-node cluster (workers read the
bars from the path), the texts made on the driver in sample order: every file the local build
writes, byte for byte."""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.cli import main
from strategy.market_sim import SimMarketConfig, simulate_frame
from tests.ray.conftest import RayCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPEC = "width: 96\nheight: 96\n"  # small charts: rendering, not pixels, is what is sharded


def _build(bars: Path, spec: Path, out: Path, *ray: str) -> tuple[str, str]:
    """The command's `ok: OUT (dataset HASH, spec HASH, counts)` line, and all it printed."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        code = main(
            ["dataset", "build", "--bars", str(bars), "--spec", str(spec), "--stride", "2",
             "--out", str(out), "--no-progress", *ray]
        )  # fmt: skip
    assert code == 0, captured.getvalue()[-3000:]
    text = captured.getvalue()
    return next(line for line in text.splitlines() if line.startswith("ok: ")), text


def _files(root: Path) -> dict[str, str]:
    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


def test_dataset_build_when_rendered_on_two_nodes_then_files_identical_to_local(
    ray_cluster: RayCluster, tmp_path: Path
):
    market = SimMarketConfig(symbols=("AAA", "BBB"), bar_seconds=60, seed=3)
    frame = simulate_frame(market, datetime(2024, 2, 1, tzinfo=UTC), 900)
    bars = tmp_path / "bars.parquet"  # a path both nodes see (one machine)
    frame[["symbol", "ts", "open", "high", "low", "close", "volume"]].to_parquet(bars)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    local, said_local = _build(bars, spec, tmp_path / "local")
    remote, said = _build(bars, spec, tmp_path / "ray", "--ray", ray_cluster.address)
    assert "ray.tasks_finished" not in said_local
    tasks = re.search(r"ray\.tasks_finished .*tasks=(\d+) what=charts", said)
    assert tasks, said[-2000:]
    assert int(tasks[1]) > 2  # shards of at most 256 charts: more than one per symbol
    assert remote == local.replace(str(tmp_path / "local"), str(tmp_path / "ray"))
    a, b = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert "parquet/train.parquet" in a
    assert b == a
