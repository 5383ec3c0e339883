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


def test_backtest_when_config_ray_address_bad_then_one_line_naming_the_file_and_key(bars: Path):
    address = f"127.0.0.1:{free_ports(1)[0]}"
    config = bars.parent / "ray-config.yaml"
    config.write_text(f"starting_cash: 100000\nray: {{address: '{address}'}}\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(
            ["backtest", "--config", str(config), "--bars", str(bars),
             "--report", str(bars.parent / "report"), "--no-progress"]
        )  # fmt: skip
    assert code == 1
    assert err.getvalue().strip().splitlines() == [
        f"vlmtrader: {config}: ray.address {address}: no Ray cluster answers there "
        "(Connection refused)"
    ]
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
    assert lines[1:] == [  # named where it came from: the file's ray.address, not a --ray flag
        f"error: {bars.parent / 'build.yaml'}: ray.address {address}: no Ray cluster answers "
        "there (Connection refused)"
    ]
    assert not out.exists()
    # an address on the flag wins over the section's, and the error names the flag
    other = f"127.0.0.1:{free_ports(1)[0]}"
    code, lines, _ = _model_build(bars, f"ray: {{address: '{address}'}}\n", "--ray", other)
    assert code == 1
    assert lines[-1].startswith(f"error: --ray {other}: no Ray cluster answers there")
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


def test_ray_origin_when_flag_and_section_combine_then_names_whichever_gave_the_address():
    from daemon.cluster.config import RayConfig, ray_config, ray_origin

    section = RayConfig(address="auto")
    cases = [  # (flag, section) -> the address ray_config uses, and where its errors say it came from
        ("10.0.0.1:6379", section, "10.0.0.1:6379", "--ray"),
        ("local", section, "auto", "cfg.yaml: ray.address"),  # --ray alone keeps the section's
        (None, section, "auto", "cfg.yaml: ray.address"),
        ("local", RayConfig(), "local", "--ray"),  # the section names no address: the flag's local
        ("local", None, "local", "--ray"),
    ]
    for flag, sec, address, origin in cases:
        cfg = ray_config(flag, sec)
        assert cfg is not None
        assert (cfg.address, ray_origin(flag, sec, "cfg.yaml")) == (address, origin), flag
