"""The HTTP API served by uvicorn on a free loopback port, hit with real requests (httpx)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from daemon.api.app import Prediction, build_app
from daemon.api.config import ApiConfig
from daemon.api.metrics import Metrics
from daemon.api.server import ApiServer
from daemon.control import Controller
from daemon.errors import InputError
from strategy.types import Bar, Signal
from tests.daemon.test_bus_control import FakeDaemon

pytestmark = pytest.mark.integration
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class MeanReversion:
    """A tiny Predictor: p_up from where the last close sits in the window's range."""

    async def predict(self, symbol: str, bars: Sequence[Bar]) -> Prediction:
        if len(bars) < 2:
            msg = f"{symbol}: need at least 2 bars, got {len(bars)}"
            raise InputError(msg)
        lo, hi = min(b.low for b in bars), max(b.high for b in bars)
        pos = (bars[-1].close - lo) / (hi - lo) if hi > lo else 0.5
        signal = Signal(
            symbol=symbol,
            ts=bars[-1].ts,
            p_up=1.0 - pos,
            confidence=abs(0.5 - pos) * 2,
            scorer="test",
            reasons=("range_position",),
        )
        return Prediction(signal=signal, bundle_id=None)


def _window(n: int = 5, *, start: float = 100.0) -> list[dict[str, Any]]:
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


Scenario = Callable[[httpx.AsyncClient, FakeDaemon, Metrics], Awaitable[None]]


def run_api(scenario: Scenario, *, token: str | None = TOKEN, predictor: Any = None) -> FakeDaemon:
    daemon = FakeDaemon()
    metrics = Metrics()

    async def main() -> None:
        controller = Controller(control=daemon, max_command_bytes=1024)
        app = build_app(
            controller=controller,
            metrics=metrics,
            predictor=predictor if predictor is not None else MeanReversion(),
            token=token,
            config=ApiConfig(max_body_bytes=200_000),
        )
        async with ApiServer(
            config=ApiConfig(port=0, shutdown_timeout_seconds=2), app=app
        ) as server:
            assert server.port != 0
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                await scenario(client, daemon, metrics)

    asyncio.run(main())
    return daemon


def test_health_when_daemon_up_then_healthz_ok_and_readyz_follows_checks() -> None:
    async def scenario(c: httpx.AsyncClient, daemon: FakeDaemon, _: Metrics) -> None:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        ready = await c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["ready"] is True
        daemon.ready["model_warm"] = False
        not_ready = await c.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"]["model_warm"] is False

    run_api(scenario)


def test_metrics_and_status_when_scraped_then_text_and_json() -> None:
    async def scenario(c: httpx.AsyncClient, _: FakeDaemon, metrics: Metrics) -> None:
        metrics.on_event("risk.rejected", {"reason": "max_drawdown"})
        r = await c.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        assert 'vlmtrader_risk_rejections_total{reason="max_drawdown"} 1.0' in r.text
        assert "vlmtrader_bar_to_order_seconds_bucket" in r.text
        status = (await c.get("/status")).json()
        assert status["positions"] == {"AAA": 10.0, "BBB": -5.0}
        assert status["bundle_id"] == "bundle-1"

    run_api(scenario)


def test_control_when_token_missing_or_wrong_then_401_and_nothing_changes() -> None:
    async def scenario(c: httpx.AsyncClient, _: FakeDaemon, __: Metrics) -> None:
        r = await c.post("/control/pause")
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = await c.post("/control/flatten", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
        r = await c.post("/bundle/reload", headers={"Authorization": f"Basic {TOKEN}"})
        assert r.status_code == 401

    daemon = run_api(scenario)
    assert daemon.calls == []


def test_control_when_no_token_configured_then_mutations_disabled_with_503() -> None:
    async def scenario(c: httpx.AsyncClient, _: FakeDaemon, __: Metrics) -> None:
        r = await c.post("/control/pause", headers=AUTH)
        assert r.status_code == 503
        assert "VLMTRADER_API_TOKEN" in r.json()["detail"]
        assert (await c.get("/status")).status_code == 200

    assert run_api(scenario, token=None).calls == []


def test_control_when_authorized_then_commands_applied() -> None:
    async def scenario(c: httpx.AsyncClient, daemon: FakeDaemon, metrics: Metrics) -> None:
        r = await c.post(
            "/control/pause", headers=AUTH, json={"reason": "maintenance", "request_id": "h1"}
        )
        assert r.status_code == 200
        assert r.json()["ok"] is True
        assert r.json()["request_id"] == "h1"
        assert daemon.paused
        r = await c.post("/control/flatten", headers=AUTH, json={"symbol": "AAA"})
        assert r.json()["detail"] == {"symbol": "AAA", "orders": 1}
        r = await c.post("/control/set_state", headers=AUTH, json={"state": "halted"})
        assert r.status_code == 200
        r = await c.post("/bundle/reload", headers=AUTH, json={"path": "/bundles/v2"})
        assert r.json()["detail"]["bundle_id"] == "/bundles/v2"
        r = await c.post("/control/resume", headers=AUTH)
        assert r.status_code == 200
        assert not daemon.paused

    daemon = run_api(scenario)
    assert daemon.state == "halted"
    assert daemon.positions["AAA"] == 0.0


@pytest.mark.parametrize(
    ("path", "body", "code", "reason"),
    [
        ("/control/self_destruct", b"{}", 422, None),
        ("/control/set_state", b'{"state": "sideways"}', 422, "invalid"),
        ("/control/pause", b'{"bogus": 1}', 422, "invalid"),
        ("/control/pause", b"[1, 2]", 422, "invalid"),
        ("/control/pause", b"{not json", 422, "malformed"),
        ("/control/pause", b'{"command": "resume"}', 422, "invalid"),
        ("/control/pause", b'{"reason": "' + b"x" * 2000 + b'"}', 413, "too_large"),
        ("/control/flatten", b'{"symbol": "ZZZ"}', 409, "failed"),
        ("/bundle/reload", b'{"path": "/bundles/bad"}', 409, "failed"),
    ],
)
def test_control_when_body_bad_then_4xx_with_reason_and_nothing_changes(
    path: str, body: bytes, code: int, reason: str | None
) -> None:
    async def scenario(c: httpx.AsyncClient, _: FakeDaemon, __: Metrics) -> None:
        r = await c.post(path, headers={**AUTH, "content-type": "application/json"}, content=body)
        assert r.status_code == code
        if reason is not None:
            assert r.json()["reason"] == reason
            assert r.json()["ok"] is False

    daemon = run_api(scenario)
    assert not daemon.paused
    assert daemon.positions == {"AAA": 10.0, "BBB": -5.0}
    assert daemon.bundle_id == "bundle-1"


def test_predict_when_window_valid_then_scores_returned() -> None:
    async def scenario(c: httpx.AsyncClient, _: FakeDaemon, __: Metrics) -> None:
        r = await c.post("/predict", json={"symbol": "AAA", "bars": _window(6)})
        assert r.status_code == 200
        body = r.json()
        assert body["symbol"] == "AAA"
        assert 0.0 <= body["p_up"] <= 1.0
        assert body["direction"] == -1
        assert body["reasons"] == ["range_position"]

    run_api(scenario)


def test_predict_when_window_malformed_then_422_naming_the_bar() -> None:
    async def scenario(c: httpx.AsyncClient, _: FakeDaemon, __: Metrics) -> None:
        bars = _window(4)
        bars[2]["high"] = 1.0
        r = await c.post("/predict", json={"symbol": "AAA", "bars": bars})
        assert r.status_code == 422
        assert r.json()["detail"].startswith("bars[2]:")
        backwards = _window(3)
        backwards[2]["ts"] = backwards[0]["ts"]
        r = await c.post("/predict", json={"symbol": "AAA", "bars": backwards})
        assert "bars[2]: ts" in r.json()["detail"]
        naive = _window(2)
        naive[0]["ts"] = "2024-03-01T14:30:00"
        assert (await c.post("/predict", json={"symbol": "AAA", "bars": naive})).status_code == 422
        assert (
            await c.post("/predict", json={"symbol": "AAA", "bars": _window(1)})
        ).status_code == 422
        assert (
            await c.post("/predict", content=b"{", headers={"content-type": "application/json"})
        ).status_code == 422
        big = await c.post(
            "/predict", content=b"x" * 300_000, headers={"content-type": "application/json"}
        )
        assert big.status_code == 413

    run_api(scenario)


def test_openapi_when_fetched_then_every_endpoint_documented_with_bearer_scheme() -> None:
    async def scenario(c: httpx.AsyncClient, _: FakeDaemon, __: Metrics) -> None:
        spec = (await c.get("/openapi.json")).json()
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

    run_api(scenario)


def test_server_when_port_taken_then_config_error_naming_it() -> None:
    from daemon.errors import ConfigError

    async def main() -> None:
        app = build_app(controller=Controller(control=FakeDaemon()), metrics=Metrics())
        async with ApiServer(config=ApiConfig(port=0), app=app) as first:
            with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{first.port}"):
                async with ApiServer(config=ApiConfig(port=first.port), app=app):
                    pass

    asyncio.run(main())
