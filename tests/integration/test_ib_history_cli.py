"""`vlmtrader ib history` against the fake gateway: Parquet per symbol-day, paced, resumable."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from daemon.cli import main
from tests.ibgateway.helpers import GatewayThread
from tests.ibgateway.protocol import In

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def history_requests(gw) -> int:  # type: ignore[no-untyped-def]
    return sum(1 for _, msg in gw.requests if msg == In.REQ_HISTORICAL_DATA)


def test_history_when_run_twice_then_parquet_per_day_and_second_run_fetches_only_today(
    tmp_path: Path,
) -> None:
    runner = GatewayThread()
    with runner as gw:
        argv = [
            "ib",
            "history",
            "--symbols",
            "AAPL,MSFT",
            "--bar",
            "1min",
            "--days",
            "2",
            "--out",
            str(tmp_path),
            "--port",
            str(gw.port),
            "--no-progress",
        ]
        assert main(argv) == 0
        files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
        assert files == [
            "AAPL/2024-01-01.parquet",
            "AAPL/2024-01-02.parquet",
            "MSFT/2024-01-01.parquet",
            "MSFT/2024-01-02.parquet",
        ]
        full_day = pd.read_parquet(tmp_path / "AAPL/2024-01-01.parquet")
        assert len(full_day) == 1440
        assert full_day["ts"].is_monotonic_increasing
        today = pd.read_parquet(tmp_path / "AAPL/2024-01-02.parquet")
        assert len(today) == 15 * 60  # up to the gateway's 15:00
        first = full_day.iloc[0]
        want = gw.market.bar("AAPL", first["ts"].to_pydatetime() - timedelta(minutes=1), 60)
        assert (first["open"], first["close"]) == (want.open, want.close)

        before = history_requests(gw)
        assert main(argv) == 0  # resume: finished days are on disk, only today is fetched again
        assert history_requests(gw) - before == 2


def test_history_when_bar_size_unknown_then_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["ib", "history", "--symbols", "AAPL", "--bar", "7min", "--out", str(tmp_path)]) == 2
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("error: unknown bar size '7min'")


def test_history_when_no_gateway_answers_then_bounded_attempts_and_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["ib", "history", "--symbols", "AAPL", "--days", "1", "--out", str(tmp_path)]
    argv += ["--port", str(port), "--connect-attempts", "2", "--no-progress"]
    assert main(argv) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == (
        f"error: no IB Gateway answered at 127.0.0.1:{port} after 2 connection attempts: "
        "start IB Gateway or fix ib.host/ib.port"
    )
    assert not list(tmp_path.rglob("*.parquet"))
