"""`vlmtrader run` with the HTTP API on, hit with real requests (httpx) while it trades."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import strategy.native
from tests.integration.daemon_process import DaemonProcess
from tests.integration.e2e_helpers import (
    API_AUTH,
    API_TOKEN,
    e2e_config,
    log_events,
    orders_in_journal,
    running_daemon,
    status_json,
    until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
AUTH = API_AUTH


class Api:
    """The running daemon and an httpx client on its API port."""

    def __init__(self, daemon: DaemonProcess, tmp_path: Path, client: httpx.Client) -> None:
        self.daemon = daemon
        self.tmp_path = tmp_path
        self.http = client

    def status(self) -> dict[str, Any]:
        return status_json(self.http)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp_path = tmp_path_factory.mktemp("daemon-http")
    config = e2e_config(tmp_path, api=True, extra={"api": {"max_body_bytes": 65_536}})
    with running_daemon(config, tmp_path) as daemon:
        (started,) = log_events(daemon, "api.started")
        assert started["host"] == "127.0.0.1"
        with httpx.Client(base_url=f"http://127.0.0.1:{started['port']}", timeout=10) as client:
            yield Api(daemon, tmp_path, client)


def window(n: int = 64, *, start: float = 100.0) -> list[dict[str, Any]]:
    """n one-minute bars, oldest first, with a wave so the scorer sees some shape."""
    t0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
    bars = []
    price = start
    for i in range(n):
        step = 0.4 if (i // 8) % 2 == 0 else -0.5
        close = price + step
        bars.append(
            {
                "ts": (t0 + timedelta(minutes=i)).isoformat(),
                "open": price,
                "high": max(price, close) + 0.2,
                "low": min(price, close) - 0.2,
                "close": close,
                "volume": 1000.0 + 10 * i,
            }
        )
        price = close
    return bars


def test_health_when_daemon_ready_then_healthz_and_readyz_200_with_all_checks(api: Api) -> None:
    healthz = api.http.get("/healthz")
    until(lambda: api.http.get("/readyz").status_code == 200, daemon=api.daemon, what="readyz")
    readyz = api.http.get("/readyz")

    assert healthz.status_code == 200
    assert healthz.json() == {"status": "ok"}
    assert readyz.json()["ready"] is True
    assert readyz.json()["checks"] == {
        "started": True,
        "feed_connected": True,
        "model_warm": True,
        "journal_writable": True,
        "tasks_running": True,
    }


def test_metrics_when_trading_then_latency_histogram_and_order_counters(api: Api) -> None:
    until(lambda: orders_in_journal(api.tmp_path) >= 3, daemon=api.daemon, what="three orders")
    response = api.http.get("/metrics")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    count = samples[("vlmtrader_bar_to_order_seconds_count", ())]
    assert count >= 1
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in samples.items()
        if name == "vlmtrader_bar_to_order_seconds_bucket"
    )
    assert len(buckets) > 5
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert buckets[-1] == (float("inf"), count)
    assert samples[("vlmtrader_orders_total", (("status", "submitted"),))] == count
    inferred = {k: v for k, v in samples.items() if k[0] == "vlmtrader_inference_seconds_count"}
    assert inferred[("vlmtrader_inference_seconds_count", (("scorer", "rules"),))] >= 1
    assert set(inferred) == {("vlmtrader_inference_seconds_count", (("scorer", "rules"),))}
    assert sum(v for (n, _), v in samples.items() if n == "vlmtrader_fills_total") >= 1


def test_status_when_trading_then_positions_open_orders_and_trading_state(api: Api) -> None:
    until(lambda: orders_in_journal(api.tmp_path) >= 3, daemon=api.daemon, what="three orders")
    journaled = orders_in_journal(api.tmp_path)
    status = api.status()

    assert status["mode"] == "paper-sim"
    assert status["account"] == "test"
    assert status["trading_state"] == "active"
    assert status["paused"] is False
    assert status["signal"] == "TA-Lib rule scorer"
    assert status["orders_submitted"] >= journaled
    assert isinstance(status["open_orders"], list)
    for order in status["open_orders"]:
        assert order["client_order_id"].startswith("TEST-")
        assert order["quantity"] > order["filled_quantity"] >= 0
    for symbol, position in status["positions"].items():
        assert symbol.startswith("SIM")
        assert position["quantity"] != 0
        assert position["average_price"] > 0
    assert status["equity"] > 0
    assert status["bars"] > 0


def test_status_when_trading_then_says_whether_the_core_running_is_the_compiled_one(
    api: Api,
) -> None:
    until(lambda: api.status()["bars"] > 0, daemon=api.daemon, what="a bar")
    native = api.status()["native"]
    expected = strategy.native.check()  # this checkout's build, as the daemon's import saw it

    assert native["active"] is expected.active, native
    if expected.active:  # bars, book, kernel, risk ... are imported by a trading daemon
        assert native["modules"] >= 5, native
    else:
        assert native["reason"] == expected.reason, native


def test_predict_when_window_of_64_bars_then_calibrated_p_up_in_unit_interval(api: Api) -> None:
    bars = window(64)
    response = api.http.post("/predict", json={"symbol": "SIM0", "bars": bars})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["symbol"] == "SIM0"
    assert 0.0 <= body["p_up"] <= 1.0
    assert 0.0 <= body["confidence"] <= 1.0
    assert body["direction"] in (-1, 0, 1)
    assert body["scorer"] == "rules"
    assert body["bundle_id"] is None  # the rule scorer has no bundle
    assert datetime.fromisoformat(body["ts"]) == datetime.fromisoformat(bars[-1]["ts"])


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {API_TOKEN}"}],
    ids=["no-token", "wrong-token", "not-bearer"],
)
def test_control_when_token_missing_or_wrong_then_401_and_nothing_changes(
    api: Api, headers: dict[str, str]
) -> None:
    pause = api.http.post("/control/pause", headers=headers, json={})
    flatten = api.http.post("/control/flatten", headers=headers)
    reload_bundle = api.http.post("/bundle/reload", headers=headers)
    status = api.status()

    assert (pause.status_code, flatten.status_code, reload_bundle.status_code) == (401, 401, 401)
    assert pause.headers["www-authenticate"].startswith("Bearer")
    assert status["paused"] is False
    assert status["signal"] == "TA-Lib rule scorer"
    assert status["trading_state"] == "active"


def test_control_when_pause_then_status_paused_no_new_orders_and_resume_trades_again(
    api: Api,
) -> None:
    paused = api.http.post("/control/pause", headers=AUTH, json={"request_id": "h1"})
    status = api.status()
    orders_at_pause = orders_in_journal(api.tmp_path)
    bars_at_pause = status["bars"]
    until(lambda: api.status()["bars"] >= bars_at_pause + 40, daemon=api.daemon, what="40 bars")
    orders_while_paused = orders_in_journal(api.tmp_path)
    resumed = api.http.post("/control/resume", headers=AUTH)
    after_resume = api.status()
    until(
        lambda: orders_in_journal(api.tmp_path) > orders_while_paused,
        daemon=api.daemon,
        what="orders after resume",
    )

    assert paused.status_code == 200, paused.text
    assert paused.json()["ok"] is True
    assert (paused.json()["command"], paused.json()["source"]) == ("pause", "http")
    assert paused.json()["request_id"] == "h1"
    assert status["paused"] is True
    assert orders_while_paused == orders_at_pause
    assert resumed.status_code == 200
    assert after_resume["paused"] is False


def test_bundle_reload_when_no_bundle_on_disk_then_409_and_rules_scorer_keeps_serving(
    api: Api,
) -> None:
    response = api.http.post("/bundle/reload", headers=AUTH, json={"path": "/nonexistent/bundle"})
    status = api.status()
    readyz = api.http.get("/readyz")

    assert response.status_code == 409, response.text
    assert response.json()["ok"] is False
    assert response.json()["reason"] == "failed"
    assert "/nonexistent/bundle" in response.json()["error"]
    assert status["scorer"] == "rules"
    assert status["bundle_id"] is None
    assert readyz.status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/predict", {"symbol": "SIM0", "bars": window(3)}, 422),  # too few bars to score
        ("/predict", {"symbol": "SIM0", "bars": []}, 422),
        ("/predict", {"symbol": "bad symbol!", "bars": window(10)}, 422),
        ("/predict", {"symbol": "SIM0", "bars": window(10), "extra": 1}, 422),
        ("/predict", {"symbol": "SIM0", "bars": [*window(10)[5:], *window(10)[:5]]}, 422),
        (
            "/predict",
            {"symbol": "SIM0", "bars": [{**window(9)[0], "high": 1.0}, *window(9)[1:]]},
            422,
        ),
        ("/predict", b"{not json", 422),
        ("/predict", b"x" * 70_000, 413),
        ("/control/set_state", {"state": "sideways"}, 422),
        ("/control/pause", {"reason": 5}, 422),
        ("/control/pause", {"unknown_field": True}, 422),
        ("/control/pause", b"[1, 2]", 422),
        ("/control/pause", b"{oops", 422),
        ("/control/pause", {"reason": "x" * 5000}, 413),
        ("/control/self_destruct", {}, 422),
        ("/control/flatten", {"symbol": "NOPE"}, 409),  # valid, but the daemon knows no NOPE
    ],
)
def test_request_when_body_bad_then_4xx_with_detail_and_nothing_changes(
    api: Api, path: str, body: Any, code: int
) -> None:
    before = orders_in_journal(api.tmp_path)
    if isinstance(body, bytes):
        response = api.http.post(
            path, content=body, headers={**AUTH, "Content-Type": "application/json"}
        )
    else:
        response = api.http.post(path, json=body, headers=AUTH)
    status = api.status()

    assert response.status_code == code, response.text
    payload = response.json()
    assert payload.get("detail") or payload.get("error")
    assert status["paused"] is False
    assert status["signal"] == "TA-Lib rule scorer"
    assert status["trading_state"] == "active"
    assert api.daemon.proc.poll() is None
    flattened = [e for e in log_events(api.daemon, "daemon.flattened")]
    assert flattened == []
    assert orders_in_journal(api.tmp_path) >= before
