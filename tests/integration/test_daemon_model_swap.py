"""`vlmtrader run` with scorer.kind auto: trades with rules at once, bootstraps the full bundle in the
background, hot-swaps to render -> CLIP -> XGBoost -> fusion, and refuses a corrupt bundle on reload."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.daemon_process import (
    DaemonProcess,
    count,
    read_db,
    wait_for,
    write_config,
)
from vlm_engine.bundle import read_card
from vlm_engine.bundle.bundle import read_spec
from vlm_engine.render import make_renderer
from vlm_engine.render.png import chart_meta, encode_png
from vlm_engine.render.window import make_window

pytestmark = pytest.mark.integration

TOKEN = "swap-test-token"


def _events(daemon: DaemonProcess) -> list[dict[str, Any]]:
    out = []
    for line in daemon.log_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and "event" in event:
            out.append(event)
    return out


def _names(daemon: DaemonProcess) -> list[str]:
    return [e["event"] for e in _events(daemon)]


def _signals(journal: Path, scorer: str) -> int:
    return count(journal, f"SELECT count(*) FROM signals WHERE scorer = '{scorer}'")


def chart_png(bundle: Path, *, other_spec: bool = False) -> bytes:
    """A chart PNG drawn with the bundle's own chart spec (or a different one)."""
    spec = read_spec(bundle)
    if other_spec:
        spec = type(spec)(**{**{f: getattr(spec, f) for f in spec.__struct_fields__},
                             "window": spec.window + 1})  # fmt: skip
    n = spec.bars_needed
    close = 100 + np.cumsum(np.sin(np.arange(n) / 3.0))
    window = make_window(
        symbol="SIMX", bar_seconds=60, timestamps=1_767_225_600 + 60 * np.arange(n), open=close - 0.2,
        high=close + 0.5, low=close - 0.6, close=close, volume=np.full(n, 1000.0),
    )  # fmt: skip
    return encode_png(make_renderer(spec).render(window), chart_meta(spec, window))


def _json_window(n: int) -> list[dict[str, Any]]:
    """n one-minute bars as /predict JSON, oldest first."""
    close = 100 + np.cumsum(np.sin(np.arange(n) / 3.0))
    return [
        {
            "ts": datetime.fromtimestamp(1_767_225_600 + 60 * i, tz=UTC).isoformat(),
            "open": float(close[i] - 0.2),
            "high": float(close[i] + 0.5),
            "low": float(close[i] - 0.6),
            "close": float(close[i]),
            "volume": 1000.0,
        }
        for i in range(n)
    ]


def _samples(text: str) -> dict[str, float]:
    """Each sample by name summed over its labels, and by name{label=value} alone."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
            for label, value in s.labels.items():
                out[f"{s.name}{{{label}={value}}}"] = (
                    out.get(f"{s.name}{{{label}={value}}}", 0.0) + s.value
                )
    return out


def test_run_when_auto_without_bundle_then_rules_first_bootstrap_swap_to_ml_and_corrupt_reload_refused(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    journal = state / "journal.sqlite"
    config = write_config(
        tmp_path / "cfg.yaml",
        state_dir=state,
        speed=1200,
        extra={
            "scorer": {"kind": "auto", "bootstrap_args": ["--quick"]},
            "strategy": {"hold_bars": 3, "enter_threshold": 0.52, "min_confidence": 0.02},
            "api": {"enabled": True, "port": 0, "shutdown_timeout_seconds": 1.0},
        },
    )
    daemon = DaemonProcess(
        config, log_path=tmp_path / "daemon.log", env={"VLMTRADER_API_TOKEN": TOKEN}
    )
    try:
        wait_for(lambda: "daemon.ready" in _names(daemon), timeout=60, what="daemon.ready")
        (ready,) = [e for e in _events(daemon) if e["event"] == "daemon.ready"]
        assert ready["scorer"] == "rules"
        wait_for(lambda: "scorer.swapped" in _names(daemon), timeout=180, what="scorer.swapped")
        names = _names(daemon)
        assert names.index("model.bootstrap_started") < names.index("model.bootstrap_finished")
        assert names.index("model.bootstrap_finished") < names.index("scorer.swapped")
        assert names.index("order.submitted") < names.index("scorer.swapped")  # rules traded
        (swapped,) = [e for e in _events(daemon) if e["event"] == "scorer.swapped"]
        assert (swapped["previous"], swapped["current"]) == ("rules", "ml")
        assert _signals(journal, "rules") > 0

        wait_for(lambda: _signals(journal, "ml") >= 20, timeout=60, what="ML signals")
        with read_db(
            journal
        ) as con:  # every ML signal went through fusion: p_up and confidence set
            rows = con.execute(
                "SELECT p_up, confidence FROM signals WHERE scorer = 'ml'"
            ).fetchall()
        assert all(0.0 <= r["p_up"] <= 1.0 and 0.0 <= r["confidence"] <= 1.0 for r in rows)

        (api,) = [e for e in _events(daemon) if e["event"] == "api.started"]
        bundle = state / "bundles" / "default"
        with httpx.Client(base_url=f"http://127.0.0.1:{api['port']}", timeout=60) as http:
            png = {"Content-Type": "image/png"}
            scored = http.post("/predict", content=chart_png(bundle), headers=png)
            assert scored.status_code == 200, scored.text
            body = scored.json()
            assert body["bundle_id"] == swapped["bundle_id"]
            assert 0.0 <= body["p_up"] <= 1.0
            assert body["patterns"]
            other = http.post("/predict", content=chart_png(bundle, other_spec=True), headers=png)
            assert other.status_code == 409, other.text
        bad = tmp_path / "bad_bundle"
        shutil.copytree(state / "bundles" / "default", bad)
        (bad / "xgb" / "model.json").write_text("{}")
        with httpx.Client(base_url=f"http://127.0.0.1:{api['port']}", timeout=60) as http:
            refused = http.post(
                "/bundle/reload",
                headers={"Authorization": f"Bearer {TOKEN}"},
                json={"path": str(bad)},
            )
            assert refused.status_code != 200
            assert "corrupt bundle, xgb/model.json" in refused.text
            before = _signals(journal, "ml")
            wait_for(lambda: _signals(journal, "ml") > before + 8, timeout=30, what="ML serving")
            status = http.get("/status").json()
        assert status["scorer"] == "ml"
        assert status["bundle_id"] == swapped["bundle_id"]
        assert [e["scorer"] for e in _events(daemon) if e["event"] == "bundle.load_failed"] == [
            "ml"
        ]
    finally:
        code = daemon.terminate()
    assert code == 0, daemon.log_text()[-3000:]


def test_run_when_auto_with_bundle_on_disk_then_ready_before_load_rules_first_then_swapped(
    tmp_path: Path,
) -> None:
    from tests.daemon.ml_helpers import quick_bundle

    state = tmp_path / "state"
    journal = state / "journal.sqlite"
    shutil.copytree(quick_bundle(), state / "bundles" / "default")
    config = write_config(
        tmp_path / "cfg.yaml",
        state_dir=state,
        speed=1200,
        extra={
            "scorer": {"kind": "auto", "bootstrap": False},
            "strategy": {"hold_bars": 3, "enter_threshold": 0.52, "min_confidence": 0.02},
            "api": {"enabled": True, "port": 0, "shutdown_timeout_seconds": 1.0},
        },
    )
    daemon = DaemonProcess(config, log_path=tmp_path / "daemon.log")
    answers: list[tuple[dict[str, bool], bool]] = []  # /readyz checks, swap logged after it
    try:
        wait_for(lambda: "api.started" in _names(daemon), timeout=60, what="api.started")
        (api,) = [e for e in _events(daemon) if e["event"] == "api.started"]
        with httpx.Client(base_url=f"http://127.0.0.1:{api['port']}", timeout=30) as http:

            def warm() -> bool:
                checks = http.get("/readyz").json()["checks"]
                answers.append((checks, "scorer.swapped" in _names(daemon)))
                return checks["model_warm"]

            wait_for(warm, timeout=120, what="/readyz model_warm")
            wait_for(lambda: _signals(journal, "ml") >= 5, timeout=60, what="ML signals")
            metrics = _samples(http.get("/metrics").text)
        events = _events(daemon)
    finally:
        code = daemon.terminate()
    assert code == 0, daemon.log_text()[-3000:]
    names = [e["event"] for e in events]
    (ready,) = [e for e in events if e["event"] == "daemon.ready"]
    assert ready["scorer"] == "rules"
    # Ready (reconciled, trading) before the bundle started loading; the rules scored meanwhile.
    assert names.index("daemon.ready") < names.index("bundle.loading")
    assert names.index("bundle.loading") < names.index("scorer.swapped")
    first_rules = next(i for i, e in enumerate(events) if e.get("scorer") == "rules"
                       and e["event"] == "model.inferred")  # fmt: skip
    assert first_rules < names.index("scorer.swapped")
    (swapped,) = [e for e in events if e["event"] == "scorer.swapped"]
    assert (swapped["previous"], swapped["current"]) == ("rules", "ml")
    assert swapped["bundle_id"] == read_card(quick_bundle()).bundle_id
    assert _signals(journal, "rules") > 0
    # rules' and ML's batch timings in their own series of the inference histogram
    assert metrics["vlmtrader_inference_seconds_count{scorer=rules}"] >= 1
    assert metrics["vlmtrader_inference_seconds_count{scorer=ml}"] >= 1
    # model_warm is false until the bundle serves: every answer saying warm came after the swap,
    # and the daemon answered not-warm while it was up and trading on rules (torch alone takes
    # seconds to import, the answers come every 0.1 s).
    assert all(swap_logged for checks, swap_logged in answers if checks["model_warm"])
    assert any(checks["started"] and not checks["model_warm"] for checks, _ in answers)
    assert not any(checks["model_warm"] for checks, _ in answers if not checks["started"])


def test_run_when_shadow_bundle_set_then_shadow_signals_journaled_measured_and_never_traded(
    tmp_path: Path,
) -> None:
    from tests.daemon.ml_helpers import quick_bundle

    state = tmp_path / "state"
    journal = state / "journal.sqlite"
    shutil.copytree(quick_bundle(), state / "bundles" / "live")
    shutil.copytree(quick_bundle(), state / "bundles" / "shadow")
    config = write_config(
        tmp_path / "cfg.yaml",
        state_dir=state,
        speed=1200,
        extra={
            "scorer": {"kind": "ml", "bundle": "bundles/live", "shadow_bundle": "bundles/shadow"},
            "bars": {"window": 64},
            "strategy": {"hold_bars": 3, "enter_threshold": 0.52, "min_confidence": 0.02},
            "api": {"enabled": True, "port": 0, "shutdown_timeout_seconds": 1.0},
        },
    )
    daemon = DaemonProcess(config, log_path=tmp_path / "daemon.log")
    try:
        wait_for(lambda: "daemon.ready" in _names(daemon), timeout=90, what="daemon.ready")
        assert "shadow.loaded" in _names(daemon)
        wait_for(lambda: _signals(journal, "ml_shadow") >= 10, timeout=90, what="shadow signals")
        (api,) = [e for e in _events(daemon) if e["event"] == "api.started"]
        with httpx.Client(base_url=f"http://127.0.0.1:{api['port']}", timeout=30) as http:
            status = http.get("/status").json()
            shadow = status["shadow"]
            predicted = http.post("/predict", json={"symbol": "SIMX", "bars": _json_window(64)})
            ready = http.get("/readyz").json()
            metrics = http.get("/metrics").text
        assert predicted.status_code == 200, predicted.text
        assert (predicted.json()["scorer"], predicted.json()["bundle_id"]) == (
            "ml",
            status["bundle_id"],
        )
        assert ready["checks"]["model_warm"] is True
        samples = _samples(metrics)
        assert samples["vlmtrader_inference_seconds_count"] >= 2  # bars scored, and /predict
        assert samples["vlmtrader_render_seconds_count"] >= 2
        # the shadow's inference in its own series, never folded into live's
        assert samples["vlmtrader_inference_seconds_count{scorer=ml_shadow}"] >= 1
        # The same bundle twice: the shadow agrees with live on every window.
        assert shadow["signals"] > 0
        assert shadow["direction_agreement"] == 1.0
        assert shadow["mean_abs_p_diff"] == 0.0
        assert shadow["errors"] == 0
        assert "vlmtrader_shadow_direction_agreement 1.0" in metrics
        with read_db(journal) as con:
            scorers = {r[0] for r in con.execute("SELECT DISTINCT scorer FROM signals")}
            reasons = {r[0] for r in con.execute("SELECT DISTINCT reason FROM orders")}
        assert scorers == {"ml", "ml_shadow"}
        assert reasons  # live traded
    finally:
        code = daemon.terminate()
    assert code == 0, daemon.log_text()[-3000:]
