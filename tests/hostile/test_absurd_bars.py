"""One absurd bar (high = close = 1e308, a 1e-300 price, a 1e300 volume) never reaches a model: the
bar validator refuses it, a window with out-of-range features gets a rejected signal while the
rest of its batch is scored, and `/predict` answers a one-line 4xx instead of an XGBoostError."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
from structlog.testing import capture_logs

from daemon.model.active import LoadOptions, load_active
from daemon.pipeline import Pipeline
from strategy.bars import BarStore, BarStoreConfig, Window
from strategy.market_sim import MarketSimulator, SimMarketConfig
from strategy.ml_scorer import MLScorer
from strategy.scoring import rejection
from strategy.types import Bar
from tests.daemon.ml_helpers import WINDOW, quick_bundle, sample_windows
from tests.daemon.test_pipeline import pipeline_at
from tests.integration.test_serve import AUTH, _json_bars, serving

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
ABSURD = {
    "price-1e308": {"high": 1e308, "close": 1e308},
    "price-1e-300": {"low": 1e-300, "close": 1e-300},
    "volume-1e300": {"volume": 1e300},
}


def _bar(**changes: float) -> Bar:
    values = {"open": 100.0, "high": 100.5, "low": 99.5, "close": 100.2, "volume": 1_000.0}
    return Bar(symbol="SPY", ts=T0, **{**values, **changes})


@pytest.mark.parametrize("case", sorted(ABSURD))
def test_add_when_first_bar_absurd_then_rejected_before_any_window(case: str) -> None:
    store = BarStore(config=BarStoreConfig(window=8))  # a first bar: no jump check to catch it
    rejected = store.add(_bar(**ABSURD[case]))
    assert rejected is not None
    assert rejected.reason == ("implausible_volume" if "volume" in case else "implausible_price")
    assert "\n" not in rejected.detail
    assert store.window("SPY") is None
    assert store.add(_bar(high=1e9, close=1e9)) is None  # the bounds themselves are market data


@pytest.fixture(scope="module")
def scorer() -> MLScorer:
    loaded = load_active(quick_bundle(), LoadOptions(bars=BarStoreConfig(window=WINDOW))).scorer
    assert isinstance(loaded, MLScorer)
    assert loaded.xgb is not None
    return loaded


def _absurd_last_bar(window: Window) -> Window:
    """The window with high = close = 1e308 in its last bar, as no validator would let through."""
    high, close = window.high.copy(), window.close.copy()
    high[-1] = close[-1] = 1e308
    return msgspec.structs.replace(window, high=high, close=close)


def test_score_when_one_window_has_non_finite_features_then_rejected_and_others_scored(
    scorer: MLScorer,
) -> None:
    windows = [w for w in sample_windows(symbols=("A", "B", "C")) if len(w) == WINDOW][-3:]
    assert [w.symbol for w in windows] == ["A", "B", "C"]
    alone = scorer.score(windows[1:])
    signals = scorer.score([_absurd_last_bar(windows[0]), *windows[1:]])
    assert len(signals) == 3
    why = rejection(signals[0])
    assert why is not None
    assert why.startswith("non_finite_features:")
    assert (signals[0].p_up, signals[0].confidence) == (0.5, 0.0)
    assert [rejection(s) for s in signals[1:]] == [None, None]
    assert [s.p_up for s in signals[1:]] == pytest.approx([s.p_up for s in alone])


@pytest.fixture
def ml_pipeline(tmp_path: Path, scorer: MLScorer) -> Iterator[Pipeline]:
    with pipeline_at(tmp_path, scorer=scorer, window=WINDOW) as pipeline:
        yield pipeline


def test_on_bars_when_one_symbol_bar_absurd_then_rejected_and_batch_scores_the_others(
    ml_pipeline: Pipeline,
) -> None:
    market = SimMarketConfig(symbols=["AAA", "BBB", "CCC"], seed=5)
    sim = MarketSimulator(config=market, start=T0)
    batches = [sim.next_batch() for _ in range(WINDOW + 2)]
    last = batches[-1]
    batches[-1] = [
        msgspec.structs.replace(b, high=1e308, close=1e308) if b.symbol == "AAA" else b
        for b in last
    ]

    async def go() -> int:
        for batch in batches[:-1]:
            await ml_pipeline.on_bars(batch)
        before = ml_pipeline.stats.signals
        with capture_logs() as logs:
            await ml_pipeline.on_bars(batches[-1])
        rejected = [e for e in logs if e["event"] == "bar.rejected"]
        assert [(e["symbol"], e["reason"]) for e in rejected] == [("AAA", "implausible_price")]
        return ml_pipeline.stats.signals - before

    assert asyncio.run(go()) == 2  # BBB and CCC were scored in the same batch
    rows = ml_pipeline.journal.rows("bars_rejected")
    assert [(r["symbol"], r["reason"]) for r in rows] == [("AAA", "implausible_price")]


def test_log_signals_when_signal_rejected_then_one_warning_naming_the_reason(
    ml_pipeline: Pipeline, scorer: MLScorer
) -> None:
    windows = [w for w in sample_windows() if len(w) == WINDOW][-2:]
    signals = scorer.score([_absurd_last_bar(windows[0]), windows[1]])
    with capture_logs() as logs:
        ml_pipeline._log_signals(signals)
    rejected = [e for e in logs if e["event"] == "signal.rejected"]
    assert len(rejected) == 1
    assert rejected[0]["symbol"] == windows[0].symbol
    assert rejected[0]["reason"].startswith("non_finite_features:")


def _absurd_json(window: Window, position: int, changes: dict[str, float]) -> list[dict[str, Any]]:
    bars = _json_bars(window)
    bars[position] = {**bars[position], **changes}
    return bars


def _refusal(detail: Any) -> tuple[str, str]:
    """(where, why) of the first error of a 422 body: FastAPI's list, one line per error."""
    assert isinstance(detail, list), detail
    first = detail[0]
    assert "\n" not in first["msg"]
    return ".".join(str(part) for part in first["loc"]), str(first["msg"])


def test_predict_when_window_has_absurd_bar_then_one_line_422_and_server_scores_on(
    tmp_path: Path,
) -> None:
    window = next(w for w in sample_windows() if len(w) == WINDOW)
    with serving(tmp_path, "--bundle", str(quick_bundle()), "--device", "cpu") as server:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60, headers=AUTH) as http:
            for name, changes in ABSURD.items():
                for position in (-1, 0):  # the last bar, and a first bar with no jump reference
                    body = {
                        "symbol": window.symbol,
                        "bars": _absurd_json(window, position, changes),
                    }
                    response = http.post("/predict", json=body)
                    assert response.status_code == 422, (name, position, response.text)
                    (where, why) = _refusal(response.json()["detail"])
                    field = next(iter(changes))
                    assert where == f"body.bars.{position % WINDOW}.{field}", (name, where)
                    assert "less than or equal" in why or "greater than or equal" in why, why
            good = http.post("/predict", json={"symbol": window.symbol, "bars": _json_bars(window)})
            assert good.status_code == 200, good.text
            assert good.json()["scorer"] == "ml"
            assert np.isfinite(good.json()["p_up"])
        assert server.terminate() == 0
    output = server.log_path.read_text() + server.err_path.read_text()
    assert "Traceback" not in output
    assert "XGBoostError" not in output
