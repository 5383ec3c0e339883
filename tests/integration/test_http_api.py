"""The HTTP API of a real `vlmtrader run` (paper-sim), hit with real requests (httpx).

One daemon serves the whole module; tests/integration/test_daemon_http.py covers health, metrics,
status, /predict and the 401s on its own daemon. The ones that need another process (no token,
a port already taken) start a short-lived second daemon."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.daemon_process import DaemonProcess
from tests.integration.e2e_helpers import (
    API_AUTH,
    e2e_config,
    log_events,
    running_daemon,
    start_daemon,
    status_json,
    stop_daemon,
    until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
AUTH = API_AUTH


class Api:
    """The running daemon, its config file and an httpx client on its API port."""

    def __init__(self, daemon: DaemonProcess, config: Path, port: int, client: httpx.Client):
        self.daemon = daemon
        self.config = config
        self.port = port
        self.http = client

    def status(self) -> dict[str, Any]:
        return status_json(self.http)

    def post(self, path: str, body: Any = None) -> httpx.Response:
        if isinstance(body, bytes):
            headers = {**AUTH, "Content-Type": "application/json"}
            return self.http.post(path, content=body, headers=headers)
        return self.http.post(path, json=body, headers=AUTH)


def api_port(daemon: DaemonProcess) -> int:
    (started,) = log_events(daemon, "api.started")
    return int(started["port"])


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp_path = tmp_path_factory.mktemp("http-api")
    # Long holds: positions stay open for flatten to close.
    extra = {"api": {"max_body_bytes": 200_000}, "strategy": {"hold_bars": 200}}
    config = e2e_config(tmp_path, api=True, extra=extra)
    with running_daemon(config, tmp_path) as daemon:
        port = api_port(daemon)
        # A first bundle load imports torch (seconds on a busy machine), even for a bad path.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield Api(daemon, config, port, client)


def window(n: int = 5, *, start: float = 100.0) -> list[dict[str, Any]]:
    t0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
    return [
        {
            "ts": (t0 + timedelta(minutes=i)).isoformat(),
            "open": start + i,
            "high": start + i + 1,
            "low": start + i - 1,
            "close": start + i + 0.5,
            "volume": 1000.0,
        }
        for i in range(n)
    ]


def test_openapi_when_fetched_then_every_endpoint_documented_with_bearer_scheme(api: Api) -> None:
    spec = api.http.get("/openapi.json").json()

    assert set(spec["paths"]) >= {
        "/healthz",
        "/readyz",
        "/metrics",
        "/status",
        "/predict",
        "/bundle/reload",
        "/control/{command}",
    }
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


@pytest.mark.parametrize(
    ("path", "body", "code", "reason"),
    [
        ("/control/self_destruct", b"{}", 422, None),
        ("/control/set_state", b'{"state": "sideways"}', 422, "invalid"),
        ("/control/pause", b'{"bogus": 1}', 422, "invalid"),
        ("/control/pause", b"[1, 2]", 422, "invalid"),
        ("/control/pause", b"{not json", 422, "malformed"),
        ("/control/pause", b'{"command": "resume"}', 422, "invalid"),
        ("/control/pause", b'{"reason": "' + b"x" * 5000 + b'"}', 413, "too_large"),
        ("/control/flatten", b'{"symbol": "ZZZ"}', 409, "failed"),
        ("/bundle/reload", b'{"path": "/bundles/bad"}', 409, "failed"),
    ],
)
def test_control_when_body_bad_then_4xx_with_reason_and_nothing_changes(
    api: Api, path: str, body: bytes, code: int, reason: str | None
) -> None:
    response = api.post(path, body)
    status = api.status()

    assert response.status_code == code, response.text
    if reason is not None:
        assert response.json()["reason"] == reason
        assert response.json()["ok"] is False
    assert status["paused"] is False
    assert status["trading_state"] == "active"
    assert status["bundle_id"] is None
    assert log_events(api.daemon, "daemon.flattened") == []


def test_predict_when_window_malformed_then_422_naming_the_bar(api: Api) -> None:
    # Windows long enough for the rule scorer (8 bars): the first bad bar is what the 422 names,
    # in the words of the bar validator every feed goes through (bar.rejected's reason: detail).
    bars = window(10)
    bars[2]["high"] = 1.0
    high_below = api.http.post("/predict", json={"symbol": "SIM0", "bars": bars})
    backwards = window(10)
    backwards[2]["ts"] = backwards[0]["ts"]
    not_in_order = api.http.post("/predict", json={"symbol": "SIM0", "bars": backwards})
    twice = window(10)
    twice[2]["ts"] = twice[1]["ts"]
    duplicate = api.http.post("/predict", json={"symbol": "SIM0", "bars": twice})
    naive = window(2)
    naive[0]["ts"] = "2024-03-01T14:30:00"
    no_zone = api.http.post("/predict", json={"symbol": "SIM0", "bars": naive})
    one_bar = api.http.post("/predict", json={"symbol": "SIM0", "bars": window(1)})
    torn = api.post("/predict", b"{")
    big = api.post("/predict", b"x" * 300_000)

    assert (high_below.status_code, high_below.json()) == (
        422,
        {"detail": "bars[2]: high_below_low: high 1.0 is below low 101.0"},
    )
    assert (not_in_order.status_code, not_in_order.json()) == (
        422,
        {
            "detail": "bars[2]: out_of_order: bar time 2024-03-01T14:30:00+00:00 is before "
            "the last stored bar 2024-03-01T14:31:00+00:00"
        },
    )
    assert (duplicate.status_code, duplicate.json()) == (
        422,
        {"detail": "bars[2]: duplicate_ts: a bar at 2024-03-01T14:31:00+00:00 is already stored"},
    )
    assert one_bar.json() == {"detail": "bars: 1 bars given, the model needs at least 8"}
    assert (no_zone.status_code, one_bar.status_code, torn.status_code) == (422, 422, 422)
    assert big.status_code == 413


def test_control_when_authorized_then_pause_flatten_and_resume_applied(api: Api) -> None:
    until(lambda: bool(api.status()["positions"]), daemon=api.daemon, what="a position")
    paused = api.post("/control/pause", {"reason": "maintenance", "request_id": "h1"})
    held = api.status()["positions"]
    symbol = sorted(held)[0]
    flattened = api.post("/control/flatten", {"symbol": symbol})
    until(lambda: symbol not in api.status()["positions"], daemon=api.daemon, what="flat")
    while_paused = api.status()
    resumed = api.post("/control/resume")
    after = api.status()

    assert paused.status_code == 200, paused.text
    assert (paused.json()["ok"], paused.json()["request_id"]) == (True, "h1")
    assert flattened.status_code == 200, flattened.text
    assert flattened.json()["detail"]["symbol"] == symbol
    assert flattened.json()["detail"]["orders"] >= 1
    assert while_paused["paused"] is True
    assert resumed.status_code == 200
    assert after["paused"] is False
    (logged,) = log_events(api.daemon, "daemon.flattened")
    assert (logged["symbol"], logged["orders"]) == (symbol, flattened.json()["detail"]["orders"])


def test_reload_when_posted_then_reply_lists_applied_and_refused_keys(api: Api) -> None:
    cfg = yaml.safe_load(api.config.read_text())
    cfg["account"] = "elsewhere"
    cfg["strategy"]["hold_bars"] = 150
    api.config.write_text(yaml.safe_dump(cfg))
    response = api.post("/control/reload_strategy", {"request_id": "rl-http"})
    status = api.status()

    assert response.status_code == 200, response.text
    detail = response.json()["detail"]
    assert detail["applied"] == ["strategy.hold_bars"]
    assert list(detail["refused"]) == ["account"]
    assert detail["refused"]["account"].startswith("needs a restart: ")
    assert status["account"] == "test"
    assert status["last_reload"]["applied"] == ["strategy.hold_bars"]


def test_set_state_when_halted_then_entries_rejected_and_counted_in_metrics(api: Api) -> None:
    # Last in the module: the daemon stays halted.
    response = api.post("/control/set_state", {"state": "halted", "reason": "e2e"})

    def halted_rejections() -> float:
        text = api.http.get("/metrics").text
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "vlmtrader_risk_rejections_total" and s.labels.get("reason") == "halted"
        )

    until(lambda: halted_rejections() >= 1, daemon=api.daemon, what="a halted rejection")
    status = api.status()

    assert response.status_code == 200, response.text
    assert response.json()["detail"] == {"state": "halted"}
    assert status["trading_state"] == "halted"


def test_control_when_no_token_configured_then_mutations_503_and_reads_work(
    tmp_path: Path,
) -> None:
    config = e2e_config(tmp_path, api=True)
    with running_daemon(config, tmp_path, env={"VLMTRADER_API_TOKEN": ""}) as daemon:
        base = f"http://127.0.0.1:{api_port(daemon)}"
        pause = httpx.post(f"{base}/control/pause", headers=AUTH, timeout=10)
        reload_bundle = httpx.post(f"{base}/bundle/reload", headers=AUTH, timeout=10)
        status = httpx.get(f"{base}/status", timeout=10)

    assert (pause.status_code, reload_bundle.status_code) == (503, 503)
    assert "VLMTRADER_API_TOKEN" in pause.json()["detail"]
    assert status.status_code == 200
    assert status.json()["paused"] is False
    assert log_events(daemon, "control.applied") == []


def test_server_when_port_taken_then_second_daemon_exits_2_naming_it(
    api: Api, tmp_path: Path
) -> None:
    config = e2e_config(tmp_path, api=True, extra={"api": {"port": api.port}})
    daemon = start_daemon(config, tmp_path)
    try:
        code = daemon.wait(timeout=60)
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.send_signal(signal.SIGKILL)
        stop_daemon(daemon)

    assert code == 2
    (invalid,) = log_events(daemon, "config.invalid")
    assert f"cannot listen on 127.0.0.1:{api.port}" in invalid["error"]
    assert api.daemon.proc.poll() is None
