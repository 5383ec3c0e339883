"""evaluate and backtest on the two-node cluster give the local run's results, even when the
second node's scoring worker is killed mid-run (no CLIP row lost or counted twice)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pandas as pd
import pytest

from daemon.cli import main
from strategy.market_sim import SimMarketConfig, simulate_frame
from tests.daemon.ml_helpers import quick_bundle
from tests.ray.conftest import RayCluster, RayNode

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHARD_BARS = 40  # small shards: many per node, so a kill lands mid-run
KILL_DEADLINE_S = 120.0


def _run(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue() + err.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small 1-minute bars file (3 symbols), a daemon config with a `ray:` section, the quick bundle."""
    base = tmp_path_factory.mktemp("ray-research")
    market = SimMarketConfig(symbols=("A", "B", "C"), bar_seconds=60, seed=5)
    frame = simulate_frame(market, datetime(2024, 3, 1, tzinfo=UTC), 360)
    bars = base / "bars.parquet"
    frame[["symbol", "ts", "open", "high", "low", "close", "volume"]].to_parquet(bars)
    # CLIP on the static INT8 export, named: its scores do not depend on how the charts were
    # batched or sharded (auto would measure its pick in each run, and two runs may pick apart)
    head = "starting_cash: 100000\nscorer: {runtime: onnx-int8}\n"
    local = base / "local.yaml"
    local.write_text(head)
    on_ray = base / "ray.yaml"  # the same, plus the `ray:` section
    on_ray.write_text(f"{head}ray:\n  shard_bars: {SHARD_BARS}\n  max_retries: 3\n")
    pinned = base / "pinned.yaml"  # every scoring actor on the second node (resource node2)
    pinned.write_text(f"{head}ray:\n  shard_bars: {SHARD_BARS}\n  resources: {{node2: 1}}\n")
    return {
        "bars": bars,
        "local": local,
        "ray": on_ray,
        "pinned": pinned,
        "bundle": quick_bundle(),
        "base": base,
    }


@pytest.fixture(scope="module")
def connected(ray_cluster: RayCluster):
    """This process joined to the cluster once for the module: the commands' ray_session uses the
    session it finds (Ray Data keeps per-session state that a second ray.init in one process
    would find stale)."""
    ray = pytest.importorskip("ray")
    ray.init(address=ray_cluster.address, logging_level="ERROR", log_to_driver=False)
    yield ray_cluster
    ray.shutdown()


def _evaluate(inputs: dict[str, Path], name: str, *ray: str, config_name: str = "") -> Path:
    report = inputs["base"] / name
    config = inputs[config_name or ("ray" if ray else "local")]
    code, output = _run(
        "evaluate", "--bars", str(inputs["bars"]), "--bundle", str(inputs["bundle"]),
        "--config", str(config), "--report", str(report), "--no-progress", *ray,
    )  # fmt: skip
    assert code == 0, output[-3000:]
    return report


def _backtest(inputs: dict[str, Path], name: str, *ray: str) -> dict:
    report = inputs["base"] / name
    config = inputs["ray" if ray else "local"]
    code, output = _run(
        "backtest", "--bars", str(inputs["bars"]), "--bundle", str(inputs["bundle"]),
        "--config", str(config), "--report", str(report), "--no-progress", *ray,
    )  # fmt: skip
    assert code == 0, output[-3000:]
    doc = json.loads((report / "report.json").read_text())
    for key in ("meta", "config"):  # paths of the run
        doc.pop(key, None)
    return doc


@pytest.fixture(scope="module")
def local_evaluation(inputs: dict[str, Path]) -> Path:
    return _evaluate(inputs, "evaluate-local")


def _same_evaluation(local: Path, remote: Path) -> None:
    a = pd.read_parquet(local / "predictions.parquet")
    b = pd.read_parquet(remote / "predictions.parquet")
    assert not b.duplicated(["symbol", "ts"]).any()
    clip = [c for c in a.columns if c.startswith("p_clip")]
    assert clip
    pd.testing.assert_frame_equal(
        a.drop(columns=clip), b.drop(columns=clip), check_exact=True
    )  # XGBoost, fused, labels, folds: bit-identical
    pd.testing.assert_frame_equal(a[clip], b[clip], check_exact=False, atol=1e-5, rtol=0)
    ja = json.loads((local / "report.json").read_text())
    jb = json.loads((remote / "report.json").read_text())
    assert ja["model_metrics"] == jb["model_metrics"]
    assert ja["comparison"] == jb["comparison"]
    assert ja["equity"] == jb["equity"]
    assert ja["verdict"] == jb["verdict"]


def test_evaluate_when_run_on_two_nodes_then_equals_local_run(
    inputs, local_evaluation, ray_address
):
    remote = _evaluate(inputs, "evaluate-ray", "--ray", ray_address)
    _same_evaluation(local_evaluation, remote)


def test_backtest_when_run_on_two_nodes_then_equals_local_run(inputs, connected):
    local = _backtest(inputs, "backtest-local")
    remote = _backtest(inputs, "backtest-ray", "--ray", connected.address)
    assert set(local["comparison"]) >= {"clip", "fused", "rules", "buy_and_hold"}
    assert remote == local


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                    found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def _shards_started(node: RayNode) -> int:
    """Shards the node's scoring actors have started so far (their `ray.shard_started` lines)."""
    logs = node.temp_dir.glob("session_*/logs/worker-*.out")
    return sum(p.read_text(errors="replace").count("ray.shard_started") for p in logs)


def _scoring_worker(node: RayNode, before: int) -> int | None:
    """The node's CLIP scoring actor process once it has started its second shard of this run
    (`before`: shards started by earlier runs), else None."""
    if _shards_started(node) < before + 2:
        return None
    raylets = [p for p in node.pids() if "raylet" in _cmdline(p).split(" ", 1)[0]]
    for pid in (c for r in raylets for c in _children(r)):
        if "ShardScorer" in _cmdline(pid):
            return pid
    return None


def test_evaluate_when_second_node_worker_killed_midrun_then_rows_exactly_once(
    inputs, local_evaluation, connected: RayCluster
):
    ray_cluster = connected
    killed: list[int] = []
    failed: list[BaseException] = []
    result: list[Path] = []

    def run() -> None:
        try:
            result.append(
                _evaluate(
                    inputs, "evaluate-killed", "--ray", ray_cluster.address, config_name="pinned"
                )
            )
        except BaseException as e:
            failed.append(e)

    before = _shards_started(ray_cluster.second)
    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + KILL_DEADLINE_S
    while runner.is_alive() and not killed and time.monotonic() < deadline:
        pid = _scoring_worker(ray_cluster.second, before)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        else:
            time.sleep(0.05)
    runner.join(timeout=300)
    assert not failed, failed
    assert killed, "no scoring worker ran on the second node"
    assert _shards_started(ray_cluster.second) > before + 2  # the restarted actor went on
    _same_evaluation(local_evaluation, result[0])


def test_model_build_when_xgboost_folds_and_clip_on_two_nodes_then_same_bundle_id(
    inputs, connected
):
    """--ray: XGBoost folds as tasks and CLIP on one Ray Train worker, the local build's bundle."""
    from daemon.model.bootstrap import build_log_path
    from daemon.training import quick_build_config
    from vlm_engine.bundle import read_card

    base = inputs["base"]
    market = SimMarketConfig(symbols=("AAA", "BBB"), bar_seconds=60, pattern_rate=0.0, seed=5)
    frame = simulate_frame(market, datetime(2024, 1, 1, tzinfo=UTC), 1_400)
    bars = base / "build-bars.parquet"
    frame.drop(columns=["pattern", "direction"]).to_parquet(bars, index=False)
    cards = []
    ray_args = ("--ray", connected.address, "--ray-workers", "1")
    # the same quick config as a YAML whose ray: section names the cluster (no --ray flag)
    section = base / "build-ray.yaml"
    section.write_bytes(
        msgspec.yaml.encode(quick_build_config())
        + f"ray: {{address: '{connected.address}'}}\n".encode()
    )
    runs = (("local", ()), ("ray", ray_args), ("ray-section", ("--config", str(section))))
    for name, ray in runs:
        out = base / f"build-{name}"
        code, output = _run(
            "model", "build", "--bars", str(bars), "--out", str(out), "--quick", *ray
        )
        assert code == 0, output[-3000:]
        cards.append(read_card(out))
    local, remote, from_section = cards
    for name in ("ray", "ray-section"):
        trained = [
            json.loads(line)
            for line in build_log_path(base / f"build-{name}").read_text().splitlines()
            if '"ray_train.finished"' in line
        ]
        assert [t["workers"] for t in trained] == [1], name  # the CLIP stage ran on the cluster
    assert '"ray_train.' not in build_log_path(base / "build-local").read_text()
    assert remote.bundle_id == local.bundle_id == from_section.bundle_id

    def figures(card):  # wall times differ run to run
        return {k: v for k, v in card.metrics.items() if not k.endswith("_seconds")}

    assert figures(remote) == figures(local)
