"""Per-order explanations over real parts: the quick bundle's ML scorer, the live pipeline, a SQLite
journal, the paper venue, the explainer's thread, its own store and chart files."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog

from daemon.cli import main as cli_main
from daemon.explain.config import ExplainConfig
from daemon.explain.evidence import accepted
from daemon.explain.store import read_explanation
from daemon.explain.values import CHARTS_DIR, EXPLAIN_DB
from daemon.explain.worker import Explainer
from daemon.model.active import ActiveModel
from strategy.backtest.data import iter_windows
from strategy.bars import BarStoreConfig
from strategy.kernel import BatchDecision
from strategy.rule_scorer import RuleScorer, RuleScorerConfig
from strategy.types import Signal
from tests.daemon.explain_helpers import (
    WINDOW,
    buy_orders,
    explained_pipeline,
    market,
    ml_model,
    run,
)
from tests.daemon.ml_helpers import quick_bundle
from vlm_engine.render.png import decode_png

BARS = 70
CONTRACT = {
    "client_order_id", "symbol", "ts", "side", "quantity", "reason", "scorer", "bundle_id",
    "spec_hash", "chart", "texts", "patterns", "analogs", "contributions", "fusion", "risk",
}  # fmt: skip


@pytest.fixture(scope="module")
def model() -> ActiveModel:
    return ml_model(quick_bundle())


def _orders(journal_rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    keys = ("client_order_id", "symbol", "side", "quantity", "created_ts", "reason")
    return [tuple(r[k] for k in keys) for r in journal_rows]


@pytest.fixture(scope="module")
def explained(
    model: ActiveModel, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[dict[str, Any]], list[dict[str, Any]]]:
    """One run with the explainer on: (state dir, journal orders, journal signals)."""
    directory = tmp_path_factory.mktemp("explained")
    with explained_pipeline(
        directory, scorer=model.scorer, bundle_for=lambda _s: model.bundle, explain=ExplainConfig()
    ) as pipeline:
        run(pipeline, market(BARS))
        assert pipeline.explainer is not None
        assert pipeline.explainer.wait_idle(60)
        assert pipeline.explainer.stats.failed == 0
        return directory, pipeline.journal.rows("orders"), pipeline.journal.rows("signals")


def test_explain_when_ml_orders_then_each_has_the_scored_chart_texts_and_contributions(
    model: ActiveModel, explained: tuple[Path, list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    directory, orders, signals = explained
    assert orders, "the eager strategy trades on the quick bundle's signals"
    bundle = model.bundle
    assert bundle is not None
    windows = {
        (w.symbol, int(w.timestamps[-1])): w
        for chunk in iter_windows(market(BARS), BarStoreConfig(window=WINDOW))
        for w in chunk
    }
    p_up = {(s["symbol"], s["ts"]): s["p_up"] for s in signals if s["scorer"] == "ml"}
    for order in orders:
        doc = read_explanation(directory / EXPLAIN_DB, order["client_order_id"])
        assert doc is not None
        assert set(doc) >= CONTRACT
        assert (doc["symbol"], doc["bundle_id"]) == (order["symbol"], bundle.bundle_id)
        png = (directory / CHARTS_DIR / f"{doc['chart']['hash']}.png").read_bytes()
        pixels, meta = decode_png(png)
        assert meta.spec_hash == doc["spec_hash"] == bundle.spec_hash
        window = windows[(order["symbol"], meta.last_ts)]
        rendered = bundle.engine.render([window.tail(bundle.spec.bars_needed)])[0]
        assert np.array_equal(pixels, rendered), "the stored chart is the image CLIP scored"
        sims = [t["similarity"] for t in doc["texts"]]
        assert len(sims) == 5
        assert sims == sorted(sims, reverse=True)
        assert {t["pattern"] for t in doc["texts"]} <= set(doc["patterns"])
        assert sum(doc["patterns"].values()) == pytest.approx(1.0, abs=1e-4)
        assert doc["contributions"]
        assert {c["feature"] for c in doc["contributions"]} <= set(bundle.xgb.feature_names)
        assert doc["fusion"]["p_up"] == pytest.approx(p_up[(order["symbol"], order["created_ts"])])
        assert set(doc["fusion"]["probabilities"]) == {"clip", "xgb"}
        assert doc["risk"] == {"accepted": True, "reason": "ok", "detail": ""}


def test_orders_when_explain_on_and_off_then_journal_orders_are_identical(
    model: ActiveModel,
    explained: tuple[Path, list[dict[str, Any]], list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    _, with_explain, _ = explained
    with explained_pipeline(tmp_path, scorer=model.scorer, bundle_for=None, explain=None) as p:
        run(p, market(BARS))
        without = p.journal.rows("orders")
    assert _orders(with_explain) == _orders(without)
    assert len(without) >= 2


def test_explainer_when_store_is_corrupt_then_orders_flow_and_one_error_line(
    model: ActiveModel,
    explained: tuple[Path, list[dict[str, Any]], list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    _, baseline, _ = explained  # the same orders as with a working store (and none, above)
    (tmp_path / EXPLAIN_DB).write_bytes(b"this is not a database" * 100)
    with structlog.testing.capture_logs() as logs, explained_pipeline(
        tmp_path, scorer=model.scorer, bundle_for=lambda _s: model.bundle,
        explain=ExplainConfig(),
    ) as p:  # fmt: skip
        run(p, market(BARS))
        orders = p.journal.rows("orders")
    assert _orders(orders) == _orders(baseline)
    unavailable = [e for e in logs if e["event"] == "explain.store_unavailable"]
    assert len(unavailable) == 1
    assert str(tmp_path / EXPLAIN_DB) in unavailable[0]["error"]


def _batch(model: ActiveModel, n: int) -> tuple[Any, list[Signal], BatchDecision]:
    """A real scoring call's evidence and signals, and one accepted buy order per window."""
    windows = [
        w for chunk in iter_windows(market(40), BarStoreConfig(window=WINDOW)) for w in chunk
    ]
    windows = windows[-n:]
    signals = model.scorer.score(windows)
    evidence = getattr(model.scorer, "evidence", None)
    return evidence, signals, accepted(buy_orders(windows, "B"))


def test_explainer_when_backlog_is_full_then_batches_are_dropped_and_counted(
    model: ActiveModel, tmp_path: Path
) -> None:
    release = threading.Event()

    def slow_bundle(_scorer: object) -> object:
        release.wait(30)  # the worker is stuck on the first batch
        return model.bundle

    evidence, signals, decision = _batch(model, 2)
    with (
        structlog.testing.capture_logs() as logs,
        Explainer(
            config=ExplainConfig(backlog=1), state_dir=tmp_path, bundle_for=slow_bundle
        ) as explainer,
    ):
        for _ in range(4):  # one explaining, one waiting, two over the backlog
            explainer.submit(
                scorer=model.scorer, evidence=evidence, signals=signals, decision=decision
            )
        release.set()
        assert explainer.wait_idle(60)
        stats = explainer.stats
    assert stats.dropped >= 2 * len(decision.orders)
    assert stats.explained + stats.dropped == 4 * len(decision.orders)
    dropped = [e for e in logs if e["event"] == "explain.dropped"]
    assert sum(e["orders"] for e in dropped) == stats.dropped
    assert read_explanation(tmp_path / EXPLAIN_DB, "B-1") is not None


def test_explainer_when_pipeline_busy_then_waits_for_the_batch_to_end(
    model: ActiveModel, tmp_path: Path
) -> None:
    polled = threading.Event()
    inside_batch = threading.Event()
    inside_batch.set()

    def busy() -> bool:
        polled.set()
        return inside_batch.is_set()

    evidence, signals, decision = _batch(model, 1)
    with Explainer(
        config=ExplainConfig(),
        state_dir=tmp_path,
        bundle_for=lambda _s: model.bundle,
        busy=busy,
        max_defer_seconds=120,
    ) as explainer:
        explainer.submit(scorer=model.scorer, evidence=evidence, signals=signals, decision=decision)
        assert polled.wait(30)
        assert read_explanation(tmp_path / EXPLAIN_DB, "B-0") is None  # deferred, not written
        inside_batch.clear()
        assert explainer.wait_idle(60)
    assert read_explanation(tmp_path / EXPLAIN_DB, "B-0") is not None


def test_explain_when_rule_scorer_then_short_explanation_without_chart(tmp_path: Path) -> None:
    scorer = RuleScorer(config=RuleScorerConfig())
    with explained_pipeline(tmp_path, scorer=scorer, bundle_for=None, explain=ExplainConfig()) as p:
        run(p, market(120, seed=7))
        assert p.explainer is not None
        assert p.explainer.wait_idle(30)
        orders = p.journal.rows("orders")
    assert orders
    doc = read_explanation(tmp_path / EXPLAIN_DB, orders[0]["client_order_id"])
    assert doc is not None
    assert set(doc) >= CONTRACT
    assert doc["scorer"] == "rules"
    assert doc["chart"] is None
    assert doc["texts"] == []
    assert doc["reasons"], "the rule scorer's reasons say why"
    assert doc["risk"]["accepted"] is True


def test_cli_explain_when_order_known_then_prints_texts_and_writes_page(
    explained: tuple[Path, list[dict[str, Any]], list[dict[str, Any]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    directory, orders, _ = explained
    coid = orders[0]["client_order_id"]
    page = tmp_path / "why.html"
    assert cli_main(["explain", coid, "--state-dir", str(directory), "--open", str(page)]) == 0
    out = capsys.readouterr().out
    assert coid in out
    assert "CLIP read the chart as:" in out
    assert "XGBoost contributions" in out
    assert "data:image/png;base64," in page.read_text()
    assert cli_main(["explain", "NOPE-1", "--state-dir", str(directory)]) == 1
    assert "NOPE-1: no explanation" in capsys.readouterr().err
