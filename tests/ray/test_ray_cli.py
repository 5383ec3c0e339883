"""`--ray` with an address where no cluster answers, or that is no address: a one-line error, exit 1."""

from __future__ import annotations

import contextlib
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.cli import main
from strategy.market_sim import SimMarketConfig, simulate_frame
from tests.ray.conftest import free_ports

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def bars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("ray-cli")
    frame = simulate_frame(SimMarketConfig(symbols=("A",)), datetime(2024, 3, 1, tzinfo=UTC), 80)
    path = base / "bars.parquet"
    frame[["symbol", "ts", "open", "high", "low", "close", "volume"]].to_parquet(path)
    (base / "config.yaml").write_text("starting_cash: 100000\n")
    return path


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("127.0.0.1:{port}", "no Ray cluster answers there"),
        ("ray://127.0.0.1:{port}", "no Ray cluster answers there"),
        ("not-an-address", "not an address"),
    ],
)
def test_backtest_when_ray_address_bad_then_one_line_error(bars: Path, address: str, says: str):
    address = address.format(port=free_ports(1)[0])  # nothing listens on a port just freed
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(
            ["backtest", "--config", str(bars.parent / "config.yaml"), "--bars", str(bars),
             "--report", str(bars.parent / "report"), "--no-progress", "--ray", address]
        )  # fmt: skip
    lines = err.getvalue().strip().splitlines()
    assert code == 1
    assert lines == [lines[0]]
    assert lines[0].startswith(f"vlmtrader: --ray {address}: ")
    assert says in lines[0]
    assert not (bars.parent / "report").exists()


def test_dataset_build_when_ray_address_bad_then_one_line_error_before_reading(bars: Path):
    address = f"127.0.0.1:{free_ports(1)[0]}"
    out = bars.parent / "dataset"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(
            ["dataset", "build", "--bars", str(bars.parent / "missing.parquet"), "--out", str(out),
             "--no-progress", "--ray", address]
        )  # fmt: skip
    lines = err.getvalue().strip().splitlines()
    assert code == 1
    assert len(lines) == 1
    # the cluster, not the missing bars file: the bars are never read
    assert lines[0].startswith(f"error: --ray {address}: no Ray cluster answers there")
    assert not out.exists()


def test_dataset_build_when_ray_with_sim_then_one_line_error(bars: Path):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["dataset", "build", "--sim", "--out", str(bars.parent / "sim"), "--ray"])
    lines = err.getvalue().strip().splitlines()
    assert code == 2
    assert len(lines) == 1
    assert "--ray needs --bars" in lines[0]


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--ray-workers", "2"], "--ray-workers 2: needs --ray"),
        (["--ray", "--ray-workers", "0"], "at least 1"),
    ],
)
def test_model_build_when_ray_workers_do_not_fit_then_one_line_and_exit_2(
    bars: Path, flags: list[str], says: str
):
    out = bars.parent / "bundle"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["model", "build", "--bars", str(bars), "--out", str(out), "--quick", *flags])
    lines = err.getvalue().strip().splitlines()
    assert code == 2
    assert len(lines) == 1
    assert says in lines[0]
    assert not out.exists()


def _model_build(bars: Path, config: str, *flags: str) -> tuple[int, list[str], Path]:
    """`model build --config` (a YAML of `config`) with flags: exit code, stderr lines, --out."""
    path = bars.parent / "build.yaml"
    path.write_text(config)
    out = bars.parent / "bundle"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["model", "build", "--bars", str(bars), "--out", str(out), "--quick",
                     "--config", str(path), *flags])  # fmt: skip
    return code, err.getvalue().strip().splitlines(), out


def test_model_build_when_config_has_ray_section_then_ray_runs_where_it_says(bars: Path):
    address = f"127.0.0.1:{free_ports(1)[0]}"  # nothing listens: the section was read if it says so
    code, lines, out = _model_build(bars, f"ray:\n  address: '{address}'\n  shard_bars: 500\n")
    assert code == 1
    assert lines[0].startswith("log: ")  # the build says where its log goes, then the one error
    assert lines[1:] == [
        f"error: --ray {address}: no Ray cluster answers there (Connection refused)"
    ]
    assert not out.exists()
    # --ray-workers is allowed with the section alone (it fails on the address, not on the flag)
    code, lines, _ = _model_build(bars, f"ray: {{address: '{address}'}}\n", "--ray-workers", "2")
    assert code == 1
    assert "no Ray cluster answers there" in lines[-1]


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ("ray: {cpus_per_actor: -1}", "Expected `float` >= 0.0 - at `$.ray.cpus_per_actor`"),
        ("ray: {adress: auto}", "Object contains unknown field `adress` - at `$.ray`"),
        ("ray: 3", "Expected `object | null`, got `int` - at `$.ray`"),
    ],
)
def test_model_build_when_ray_section_bad_then_one_line_naming_the_key_and_exit_2(
    bars: Path, section: str, says: str
):
    code, lines, out = _model_build(bars, f"{section}\nhorizon: 3\n")
    assert code == 2
    assert lines == [f"error: {bars.parent / 'build.yaml'}: {says}"]
    assert not out.exists()
