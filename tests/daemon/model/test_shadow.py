"""Shadow mode: a second scorer on the same windows after the orders are out, journaled, never traded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest
from structlog.testing import capture_logs

from daemon.api.metrics import Metrics
from daemon.config import AppConfig, ScorerConfig
from daemon.model.shadow import ShadowRunner
from daemon.pipeline import Pipeline
from strategy.bars import Window
from strategy.rule_scorer import RuleScorer, RuleScorerConfig
from strategy.types import Signal
from tests.daemon.ml_helpers import quick_bundle, started_slot
from tests.daemon.test_pipeline import market, pipeline, pipeline_at, run  # noqa: F401

# A shadow that reads the same patterns with half the edge: same direction, different P(up).
HALF_EDGE = RuleScorerConfig(max_edge=0.175)


def _orders(p: Pipeline) -> list[tuple[str, str, float]]:
    return [(r["symbol"], r["side"], r["quantity"]) for r in p.journal.rows("orders")]


def test_shadow_when_run_beside_live_then_journaled_compared_and_never_traded(
    pipeline: Pipeline,  # noqa: F811
    tmp_path: Path,
) -> None:
    batches = market(150)
    pipeline.shadow = ShadowRunner(scorer=RuleScorer(config=HALF_EDGE), bundle_id="half-edge")
    run(pipeline, batches)
    signals = pipeline.journal.rows("signals")
    live = {(s["symbol"], s["ts"]): s["p_up"] for s in signals if s["scorer"] == "rules"}
    shadow = {(s["symbol"], s["ts"]): s["p_up"] for s in signals if s["scorer"] == "rules_shadow"}
    # Signals with an opinion are journaled: the shadow reads the same patterns, so the same ones.
    assert shadow.keys() == live.keys()
    assert live  # the seeded market has patterns
    for k in live:  # half the edge, the same side
        assert shadow[k] - 0.5 == pytest.approx((live[k] - 0.5) / 2)
    stats = pipeline.shadow.stats
    scored = sum(1 for batch in batches for _ in batch) - 3 * 15  # every window once warm (16 bars)
    assert stats.signals == pytest.approx(scored, abs=3)
    assert stats.direction_agreement == pytest.approx(1.0)  # half the edge keeps every side
    expected = sum(abs(shadow[k] - live[k]) for k in live) / stats.signals
    assert stats.mean_abs_p_diff == pytest.approx(expected)
    assert stats.errors == 0
    # The same bars without a shadow place exactly the same orders.
    with pipeline_at(tmp_path / "plain") as plain:
        run(plain, batches)
        assert _orders(plain) == _orders(pipeline)


def test_shadow_when_it_scores_then_model_inferred_under_its_own_scorer_label(
    pipeline: Pipeline,  # noqa: F811
) -> None:
    pipeline.shadow = ShadowRunner(scorer=RuleScorer(config=HALF_EDGE), bundle_id="half-edge")
    with capture_logs() as logs:
        run(pipeline, market(60))
    inferred = [e for e in logs if e["event"] == "model.inferred"]
    shadow = [e for e in inferred if e["scorer"] == "rules_shadow"]
    assert len(shadow) == pipeline.shadow.stats.batches > 0  # one line per shadow batch
    assert all(e["duration_ms"] >= 0 and e["items"] > 0 for e in shadow)
    assert len(inferred) == 2 * len(shadow)  # and live's own line per batch, as before


class _Broken:
    """A shadow scorer that fails every batch (a bundle whose model raises)."""

    name = "broken"
    blocking = True

    def score(self, windows: Sequence[Window]) -> list[Signal]:
        msg = "model exploded"
        raise RuntimeError(msg)


def test_shadow_when_it_fails_then_logged_counted_and_trading_goes_on(
    pipeline: Pipeline,  # noqa: F811
) -> None:
    pipeline.shadow = ShadowRunner(scorer=_Broken(), bundle_id="broken")
    with capture_logs() as logs:
        run(pipeline, market(120))
    failures = [e for e in logs if e["event"] == "shadow.failed"]
    assert failures
    assert "model exploded" in failures[0]["error"]
    assert pipeline.shadow.stats.errors == len(failures)
    assert pipeline.stats.orders_submitted > 0


def test_model_slot_when_shadow_bundle_set_then_full_bundle_loaded_as_shadow(
    tmp_path: Path,
) -> None:
    bundle = quick_bundle()
    cfg = AppConfig(
        state_dir=str(bundle.parent),
        scorer=ScorerConfig(kind="ml", bundle=bundle.name, shadow_bundle=bundle.name),
    )
    slot = started_slot(cfg)
    assert slot.shadow is not None
    assert slot.shadow.name == "ml_shadow"
    assert slot.shadow.scorer is not slot.current  # its own models and fusion state


def test_model_slot_when_shadow_bundle_missing_then_warning_and_no_shadow(tmp_path: Path) -> None:
    bundle = quick_bundle()
    cfg = AppConfig(
        state_dir=str(bundle.parent),
        scorer=ScorerConfig(kind="ml", bundle=bundle.name, shadow_bundle="nope"),
    )
    with capture_logs() as logs:
        slot = started_slot(cfg)
    assert slot.shadow is None
    assert slot.current.name == "ml"
    assert [e["event"] for e in logs if e["event"].startswith("shadow.")] == ["shadow.unavailable"]


class _Contrary:
    """A shadow that leans the other way than live on every window (no-opinion ones included)."""

    name = "contrary"
    blocking = True

    def __init__(self, live: object) -> None:
        assert isinstance(live, RuleScorer)
        self._live = RuleScorer(config=live.config)

    def score(self, windows: Sequence[Window]) -> list[Signal]:
        signals = self._live.score(windows)
        return [msgspec.structs.replace(s, p_up=0.9 if s.p_up <= 0.5 else 0.1) for s in signals]


def _compared(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in logs if e["event"] == "shadow.compared"]


def test_shadow_when_report_every_batches_then_one_compared_line_each_and_recent_gauges(
    pipeline: Pipeline,  # noqa: F811
) -> None:
    shadow = ShadowRunner(
        scorer=RuleScorer(config=HALF_EDGE), bundle_id="half-edge", report_every=10
    )
    pipeline.shadow = shadow
    metrics = Metrics()
    metrics.track_shadow(lambda: shadow.stats)
    assert b"vlmtrader_shadow_recent" not in metrics.render_latest()  # nothing reported yet
    with capture_logs() as logs:
        run(pipeline, market(60))
    lines = _compared(logs)
    assert len(lines) == shadow.stats.batches // 10 > 0
    last = lines[-1]
    assert last["log_level"] == "info"
    assert last["batches"] == 10
    assert last["bundle_id"] == "half-edge"
    assert last["direction_agreement"] == 1.0  # half the edge keeps every side
    assert 0 < last["mean_abs_p_diff"] < 0.2  # type: ignore[operator]
    # the reports split the windows compared so far; the last one counts them all
    assert last["total_signals"] == sum(e["signals"] for e in lines)  # type: ignore[misc]
    served = metrics.render_latest().decode()
    assert "vlmtrader_shadow_recent_direction_agreement 1.0" in served
    assert (
        f"vlmtrader_shadow_recent_mean_abs_p_diff {shadow.stats.recent_mean_abs_p_diff}" in served
    )


def test_shadow_when_it_disagrees_on_direction_then_compared_line_is_a_warning(
    pipeline: Pipeline,  # noqa: F811
) -> None:
    pipeline.shadow = ShadowRunner(
        scorer=_Contrary(pipeline.scorer), bundle_id="contrary", report_every=10
    )
    with capture_logs() as logs:
        run(pipeline, market(60))
    lines = _compared(logs)
    assert lines
    assert all(e["log_level"] == "warning" for e in lines)
    assert all(e["direction_agreement"] < 0.5 for e in lines)  # type: ignore[operator]
    assert pipeline.stats.orders_submitted > 0  # the shadow never stops trading
