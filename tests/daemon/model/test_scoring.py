"""The scoring path emits the timing lines /metrics listens for, and /predict names the bundle."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from daemon.api.metrics import Metrics
from daemon.config import AppConfig, ScorerConfig
from daemon.model.predict import ModelPredictor
from daemon.model.slot import daemon_slot
from daemon.pipeline import Pipeline
from strategy.bars import BarStoreConfig
from strategy.types import Bar
from tests.daemon.ml_helpers import WINDOW, quick_bundle, started_slot
from tests.daemon.test_pipeline import market, pipeline, run  # noqa: F401
from vlm_engine.bundle import read_card

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def _metrics_from(logs: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The events handed to Metrics as the log tap would, then the histogram counts scraped."""
    metrics = Metrics()
    for event in logs:
        metrics.on_event(str(event["event"]), dict(event))
    text = metrics.render_latest().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_seconds_count"):  # summed over labels (inference: by scorer)
                counts[s.name] = counts.get(s.name, 0.0) + s.value
                for label, value in s.labels.items():
                    counts[f"{s.name}{{{label}={value}}}"] = s.value
    return counts


def _bars(n: int, symbol: str = "AAA") -> list[Bar]:
    out = []
    price = 100.0
    for i in range(n):
        close = price + (0.4 if (i // 6) % 2 == 0 else -0.5)
        out.append(
            Bar(
                symbol=symbol,
                ts=T0 + timedelta(minutes=i),
                open=price,
                high=max(price, close) + 0.2,
                low=min(price, close) - 0.2,
                close=close,
                volume=1000.0,
            )
        )
        price = close
    return out


def _cfg(tmp_path: Path, kind: str) -> AppConfig:
    return AppConfig(
        state_dir=str(tmp_path),
        bars=BarStoreConfig(window=WINDOW),
        scorer=ScorerConfig(kind=kind, bundle=str(quick_bundle()) if kind == "ml" else "none"),  # type: ignore[arg-type]
    )


def test_pipeline_when_bars_scored_then_inference_histogram_counts_each_scored_batch(
    pipeline: Pipeline,  # noqa: F811
) -> None:
    with capture_logs() as logs:
        run(pipeline, market(40))
    inferred = [e for e in logs if e["event"] == "model.inferred"]
    assert inferred
    assert all(e["scorer"] == "rules" and e["duration_ms"] >= 0 for e in inferred)
    counts = _metrics_from(logs)
    assert counts["vlmtrader_inference_seconds_count"] == len(inferred)
    assert counts["vlmtrader_inference_seconds_count{scorer=rules}"] == len(inferred)
    assert counts["vlmtrader_render_seconds_count"] == 0  # the rule scorer draws no charts


def test_predict_when_rules_serve_then_one_inference_observed_and_no_bundle_id(
    tmp_path: Path,
) -> None:
    predictor = ModelPredictor(slot=daemon_slot(_cfg(tmp_path, "rules")))
    with capture_logs() as logs:
        prediction = asyncio.run(predictor.predict("AAA", _bars(30)))
    assert prediction.signal.scorer == "rules"
    assert prediction.bundle_id is None
    assert _metrics_from(logs)["vlmtrader_inference_seconds_count"] == 1


def test_predict_when_bundle_serves_then_bundle_id_answered_and_render_and_inference_observed(
    tmp_path: Path,
) -> None:
    predictor = ModelPredictor(slot=started_slot(_cfg(tmp_path, "ml")))
    with capture_logs() as logs:
        prediction = asyncio.run(predictor.predict("AAA", _bars(WINDOW)))
    assert prediction.bundle_id == read_card(quick_bundle()).bundle_id
    assert prediction.signal.scorer == "ml"
    counts = _metrics_from(logs)
    assert counts["vlmtrader_inference_seconds_count"] == 1
    assert counts["vlmtrader_inference_seconds_count{scorer=ml}"] == 1
    assert counts["vlmtrader_render_seconds_count"] == 1
