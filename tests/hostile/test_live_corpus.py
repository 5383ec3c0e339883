"""The live surface of ONE running daemon (HTTP API + MQTT control) against malformed inputs: each
gets a clear 4xx (or a control.rejected with a one-line error), the daemon keeps running with no
traceback in its log, MQTT control still answers, and the journal shows no effect of any of them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.hostile.bundles import DAMAGES, broken_bundle
from tests.integration.daemon_process import DaemonProcess, count, read_db
from tests.integration.e2e_helpers import (
    API_AUTH,
    API_TOKEN,
    CONTROL,
    command,
    e2e_config,
    journal_path,
    log_events,
    mqtt_publish,
    running_daemon,
    until,
)
from tests.integration.mosquitto import Mosquitto, running_mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
AUTH = API_AUTH
MAX_BODY = 65_536


class Live:
    def __init__(
        self, daemon: DaemonProcess, tmp_path: Path, http: httpx.Client, broker: Mosquitto
    ) -> None:
        self.daemon = daemon
        self.tmp_path = tmp_path
        self.http = http
        self.broker = broker
        self.journal_before = _journal_controls(journal_path(tmp_path))


def _journal_controls(path: Path) -> dict[str, Any]:
    """What an operator command would change in the journal (bars keep trading meanwhile)."""
    with read_db(path) as con:
        kv = {
            r[0]: r[1]
            for r in con.execute(
                "SELECT key, value FROM kv WHERE key IN ('paused', 'trading_state')"
            )
        }
        flattens = con.execute(
            "SELECT count(*) FROM orders WHERE reason LIKE 'flatten%'"
        ).fetchone()[0]
    return {
        "kv": kv,
        "state_changes": count(path, "SELECT count(*) FROM state_changes"),
        "flatten_orders": flattens,
    }


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp_path = tmp_path_factory.mktemp("live-corpus")
    with running_mosquitto() as broker:
        config = e2e_config(
            tmp_path,
            speed=120.0,
            mqtt_port=broker.port,
            api=True,
            extra={"api": {"max_body_bytes": MAX_BODY, "max_predict_bars": 500}},
        )
        with running_daemon(config, tmp_path) as daemon:
            (started,) = log_events(daemon, "api.started")
            url = f"http://127.0.0.1:{started['port']}"
            until(lambda: bool(log_events(daemon, "mqtt.connected")), daemon=daemon)
            with httpx.Client(base_url=url, timeout=60) as http:
                yield Live(daemon, tmp_path, http, broker)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _window(n: int = 40, **changes: Any) -> list[dict[str, Any]]:
    t0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
    bars = []
    for i in range(n):
        price = 100.0 + (i % 7) * 0.3
        bar = {
            "ts": (t0 + timedelta(minutes=i)).isoformat(),
            "open": price,
            "high": price + 0.5,
            "low": price - 0.5,
            "close": price + 0.1,
            "volume": 1000.0,
        }
        bars.append(bar)
    if changes:
        bars[-1] = {**bars[-1], **changes}
    return bars


def _predict(bars: Any, symbol: Any = "SPY") -> bytes:
    return json.dumps({"symbol": symbol, "bars": bars}).encode()


# (case id, method, path, headers, body, expected status)
JSON = {"content-type": "application/json"}
FORM = {"content-type": "multipart/form-data; boundary=xyz"}


def _form(data: bytes, *, name: str = "file", kind: str = "image/png") -> bytes:
    """A multipart/form-data body (boundary xyz) with one file field."""
    return (
        b"--xyz\r\n"
        + f'Content-Disposition: form-data; name="{name}"; filename="c.png"\r\n'.encode()
        + f"Content-Type: {kind}\r\n\r\n".encode()
        + data
        + b"\r\n--xyz--\r\n"
    )


HTTP_CASES: list[tuple[str, str, dict[str, str], bytes, int]] = [
    ("control-nested-200k", "/control/pause", JSON, _nested(100_000)[: MAX_BODY - 10], 422),
    ("control-nested-object", "/control/pause", JSON, b'{"reason": ' + _nested(20_000) + b"}", 422),
    ("control-not-json", "/control/pause", JSON, b"{pause", 422),
    ("control-binary", "/control/pause", JSON, bytes(range(256)), 422),
    ("control-invalid-utf8", "/control/pause", JSON, b'{"reason": "\xff\xfe"}', 422),
    ("control-array", "/control/pause", JSON, b"[1, 2]", 422),
    ("control-number", "/control/pause", JSON, b"123", 422),
    ("control-string", "/control/pause", JSON, b'"pause"', 422),
    ("control-null", "/control/resume", JSON, b"null", 422),
    ("control-unknown-field", "/control/pause", JSON, b'{"bogus": 1}', 422),
    (
        "control-reason-10k",
        "/control/pause",
        JSON,
        json.dumps({"reason": "x" * 10_000}).encode(),
        413,
    ),
    ("control-reason-number", "/control/pause", JSON, b'{"reason": 5}', 422),
    ("control-request-id-spaces", "/control/pause", JSON, b'{"request_id": "a b"}', 422),
    (
        "control-request-id-long",
        "/control/pause",
        JSON,
        json.dumps({"request_id": "a" * 65}).encode(),
        422,
    ),
    ("control-name-mismatch", "/control/pause", JSON, b'{"command": "resume"}', 422),
    ("control-unknown-path", "/control/bogus", JSON, b"{}", 422),
    ("set-state-bogus", "/control/set_state", JSON, b'{"state": "bogus"}', 422),
    ("set-state-number", "/control/set_state", JSON, b'{"state": 3}', 422),
    ("set-state-missing", "/control/set_state", JSON, b"{}", 422),
    ("flatten-path-symbol", "/control/flatten", JSON, b'{"symbol": "../../etc/passwd"}', 409),
    (
        "flatten-long-symbol",
        "/control/flatten",
        JSON,
        json.dumps({"symbol": "A" * 1000}).encode(),
        422,
    ),
    ("flatten-unknown-symbol", "/control/flatten", JSON, b'{"symbol": "ZZZZ"}', 409),
    ("flatten-symbol-list", "/control/flatten", JSON, b'{"symbol": ["SIM0"]}', 422),
    ("control-nan", "/control/pause", JSON, b'{"reason": NaN}', 422),
    ("control-huge-number", "/control/pause", JSON, b'{"reason": 1e999}', 422),
    ("control-over-body-limit", "/control/pause", JSON, b" " * (MAX_BODY + 1), 413),
    ("reload-missing-dir", "/bundle/reload", JSON, b'{"path": "/nonexistent/bundle"}', 409),
    ("reload-path-nul", "/bundle/reload", JSON, b'{"path": "/tmp/\\u0000x"}', 409),
    (
        "reload-path-long",
        "/bundle/reload",
        JSON,
        json.dumps({"path": "/" + "a" * 5000}).encode(),
        413,
    ),
    ("reload-path-number", "/bundle/reload", JSON, b'{"path": 7}', 422),
    ("predict-price-1e308", "/predict", JSON, _predict(_window(close=1e308, high=1e308)), 422),
    ("predict-price-1e-300", "/predict", JSON, _predict(_window(close=1e-300, low=1e-300)), 422),
    ("predict-price-negative", "/predict", JSON, _predict(_window(close=-1.0)), 422),
    ("predict-price-zero", "/predict", JSON, _predict(_window(open=0.0)), 422),
    ("predict-volume-1e300", "/predict", JSON, _predict(_window(volume=1e300)), 422),
    (
        "predict-nan-literal",
        "/predict",
        JSON,
        _predict(_window()).replace(b"1000.0", b"NaN", 1),
        422,
    ),
    (
        "predict-infinity-literal",
        "/predict",
        JSON,
        _predict(_window()).replace(b"1000.0", b"Infinity", 1),
        422,
    ),
    ("predict-high-below-low", "/predict", JSON, _predict(_window(high=90.0)), 422),
    ("predict-naive-ts", "/predict", JSON, _predict(_window(ts="2024-03-01T15:30:00")), 422),
    (
        "predict-ts-year-9999",
        "/predict",
        JSON,
        _predict(_window(ts="9999-01-01T00:00:00+00:00")),
        422,
    ),
    (
        "predict-ts-not-increasing",
        "/predict",
        JSON,
        _predict(_window(ts="2024-03-01T14:30:00+00:00")),
        422,
    ),
    ("predict-too-many-bars", "/predict", JSON, _predict(_window(501)), 422),
    ("predict-no-bars", "/predict", JSON, _predict([]), 422),
    ("predict-symbol-space", "/predict", JSON, _predict(_window(), symbol="S P Y"), 422),
    ("predict-symbol-object", "/predict", JSON, _predict(_window(), symbol={"a": 1}), 422),
    ("predict-x1000-jump", "/predict", JSON, _predict(_window(close=99_324.0, high=99_400.0)), 422),
    (
        "predict-nested",
        "/predict",
        JSON,
        b'{"symbol": "SPY", "bars": ' + _nested(20_000) + b"}",
        422,
    ),
    ("predict-extra-field", "/predict", JSON, b'{"symbol": "SPY", "bars": [], "x": 1}', 422),
    ("predict-text-plain", "/predict", {"content-type": "text/plain"}, b"hello", 415),
    ("predict-png-garbage", "/predict", {"content-type": "image/png"}, b"\x89PNG garbage", 409),
    (
        "predict-multipart-no-boundary",
        "/predict",
        {"content-type": "multipart/form-data"},
        b"--x--",
        422,
    ),
    ("predict-multipart-not-multipart", "/predict", FORM, b"hello world\r\n\r\n", 422),
    ("predict-multipart-unterminated", "/predict", FORM, _form(b"\x89PNG data")[:-10], 422),
    ("predict-multipart-header-garbage", "/predict", FORM, b"--xyz\r\nno colon\r\n\r\n", 422),
    (
        "predict-multipart-no-file",
        "/predict",
        FORM,
        _form(b"hi", name="other", kind="text/plain"),
        422,
    ),
    # well formed: the PNG is found, and refused because this daemon has no CLIP bundle loaded
    ("predict-multipart-no-bundle", "/predict", FORM, _form(b"\x89PNG data"), 409),
]


@pytest.mark.parametrize(
    ("path", "headers", "body", "expected"),
    [c[1:] for c in HTTP_CASES],
    ids=[c[0] for c in HTTP_CASES],
)
def test_http_when_malformed_input_then_clear_4xx_and_daemon_runs(
    live: Live, path: str, headers: dict[str, str], body: bytes, expected: int
) -> None:
    response = live.http.post(path, content=body, headers={**AUTH, **headers})
    assert response.status_code == expected, response.text[:500]
    body = response.json()
    detail = body.get("error") or body.get("detail")
    assert detail
    if isinstance(detail, str):
        assert "\n" not in detail
    assert live.daemon.proc.poll() is None


def test_http_when_chunked_multipart_over_limit_then_413_and_daemon_runs(live: Live) -> None:
    body = _form(b"\x89PNG" + b"x" * (2 * MAX_BODY))

    def chunks() -> Iterator[bytes]:  # no Content-Length: only counting as it arrives can refuse it
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    response = live.http.post("/predict", content=chunks(), headers=FORM)
    assert response.status_code == 413
    assert response.json()["detail"] == f"request body over {MAX_BODY} bytes"
    assert live.http.get("/healthz").status_code == 200
    assert live.daemon.proc.poll() is None


def test_http_when_chunked_body_over_limit_then_413(live: Live) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 8192

    response = live.http.post("/control/pause", content=chunks(), headers={**AUTH, **JSON})
    assert response.status_code == 413
    assert live.daemon.proc.poll() is None


@pytest.mark.parametrize("token", [None, "wrong", API_TOKEN + "x", "x" * 5000])
def test_http_when_control_without_valid_token_then_401(live: Live, token: str | None) -> None:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    response = live.http.post("/control/pause", content=b"{}", headers=headers)
    assert response.status_code == 401


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_http_when_reload_of_bundle_that_cannot_load_then_409_with_cause(
    live: Live, damage: str
) -> None:
    bundle = broken_bundle(live.tmp_path, damage)
    response = live.http.post("/bundle/reload", json={"path": str(bundle)}, headers=AUTH)
    assert response.status_code == 409, response.text
    assert str(bundle) in response.json()["error"]
    assert "\n" not in response.json()["error"]


MQTT_CASES: list[tuple[str, bytes]] = [
    ("garbage", b"\x00\x01garbage"),
    ("not-json", b"{pause"),
    ("nested-deep", _nested(2_000)),
    ("too-large", b'{"command": "pause", "reason": "' + b"x" * 5000 + b'"}'),
    ("empty", b""),
    ("array", b"[]"),
    ("unknown-command", b'{"command": "self_destruct"}'),
    ("no-command", b'{"reason": "x"}'),
    ("bad-state", b'{"command": "set_state", "state": "bogus"}'),
    ("bad-request-id", b'{"command": "pause", "request_id": "has space"}'),
    ("unknown-field", b'{"command": "pause", "bogus": true}'),
    ("flatten-unknown-symbol", b'{"command": "flatten", "symbol": "ZZZZ"}'),
    ("reload-missing", b'{"command": "reload_bundle", "path": "/nonexistent"}'),
    ("invalid-utf8", b'{"command": "pause", "reason": "\xff"}'),
    ("nan", b'{"command": "pause", "reason": NaN}'),
]


@pytest.mark.parametrize("payload", [c[1] for c in MQTT_CASES], ids=[c[0] for c in MQTT_CASES])
def test_mqtt_when_malformed_command_then_rejected_with_one_line_and_listener_lives(
    live: Live, payload: bytes
) -> None:
    before = len(log_events(live.daemon, "control.rejected"))
    mqtt_publish(live.broker.port, "operator", CONTROL, payload)
    until(
        lambda: len(log_events(live.daemon, "control.rejected")) > before,
        daemon=live.daemon,
        what="control.rejected",
    )
    rejection = log_events(live.daemon, "control.rejected")[before]
    assert rejection["source"] == "mqtt"
    assert "\n" not in str(rejection["error"])


def test_mqtt_when_reload_of_truncated_bundle_then_rejected_and_control_still_answers(
    live: Live,
) -> None:
    bundle = broken_bundle(live.tmp_path, "weights_truncated", tag="mqtt")
    before = len(log_events(live.daemon, "control.rejected"))
    mqtt_publish(
        live.broker.port, "operator", CONTROL, command("reload_bundle", "rb1", path=str(bundle))
    )
    until(
        lambda: len(log_events(live.daemon, "control.rejected")) > before,
        daemon=live.daemon,
        timeout=60,
        what="reload rejected",
    )
    assert log_events(live.daemon, "control.rejected")[before]["request_id"] == "rb1"


def test_surface_when_corpus_done_then_daemon_runs_no_traceback_journal_unchanged(
    live: Live,
) -> None:
    """Runs last in this module: the state after every malformed input above."""
    time.sleep(0.5)
    assert live.daemon.proc.poll() is None
    text = live.daemon.log_text()
    assert "Traceback" not in text
    assert "task.failed" not in text
    assert _journal_controls(journal_path(live.tmp_path)) == live.journal_before
    health = live.http.get("/readyz").json()
    assert health["checks"]["tasks_running"] is True
    # MQTT control still works after everything: a valid pause is applied.
    mqtt_publish(live.broker.port, "operator", CONTROL, command("pause", "final", reason="e2e"))
    until(
        lambda: any(
            e.get("request_id") == "final" for e in log_events(live.daemon, "control.applied")
        ),
        daemon=live.daemon,
        what="final pause applied",
    )
    assert live.http.get("/status").json()["paused"] is True
