"""The rule path's decisions on fixed bars, pinned: 100 simulated symbols through the backtest's
kernel (BarStore -> RuleScorer -> TargetStrategy -> RiskEngine -> SimBroker -> Book) give the same
journal rows (signals with their reasons, every risk decision with its reason and detail, orders,
fills, positions, cash) as before the issue-16 speed-ups of the order path.

The digest was taken with the code before those changes (main at 2ab8efc) on the same bars; a
change to any decision, reason, detail, order or fill changes it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import msgspec

from strategy.backtest.engine import BacktestConfig, BacktestEngine
from strategy.market_sim import MarketSimulator, SimMarketConfig
from strategy.risk import RiskConfig
from strategy.rule_scorer import RuleScorer, RuleScorerConfig
from strategy.target_strategy import StrategyConfig

PINNED_DIGEST = "f7c3be74f90c09b016bc391ce397a0d16cb8f349146a4726ac9a598be11c11ae"
START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


# Every table of a batch, in the order the digest was taken in: the kernel leaves a table without
# rows out of its call (journal_rows), the digest holds it as an empty list.
TABLES = (
    "bars_rejected", "signals", "decisions", "orders", "order_events", "fills", "positions",
    "state_changes", "kv",
)  # fmt: skip


class Recorder:
    """A journal sink that keeps each batch's rows as JSON, in order."""

    def __init__(self) -> None:
        self.rows: list[bytes] = []
        self.reasons: Counter[str] = Counter()

    def record_orders_ahead(self, **rows: Iterable[msgspec.Struct] | Mapping[str, str]) -> None:
        assert set(rows) <= set(TABLES), set(rows) - set(TABLES)
        for decision in rows.get("decisions", ()):
            self.reasons[decision.reason] += 1  # type: ignore[union-attr]
        self.rows.append(
            msgspec.json.encode(
                {k: list(rows.get(k, ())) if k != "kv" else kv_as_stored(rows[k]) for k in TABLES}
            )
        )


def kv_as_stored(kv: Iterable[msgspec.Struct] | Mapping[str, str]) -> dict[str, str]:
    """The kv values as the journal stores them (daemon.journal_rows.kv_text): the kernel hands
    last_bar_ts over as the bar's datetime, stored as its isoformat()."""
    assert isinstance(kv, Mapping)
    values: Mapping[str, object] = kv
    return {k: v.isoformat() if isinstance(v, datetime) else str(v) for k, v in values.items()}


def run_fixed_bars() -> Recorder:
    market = SimMarketConfig(
        symbols=tuple(f"S{i:03d}" for i in range(100)), seed=3, pattern_rate=0.03
    )
    sim = MarketSimulator(config=market, start=START)
    config = BacktestConfig(
        starting_cash=1_000_000.0,
        strategy=StrategyConfig(position_notional=4_000, hold_bars=5),
        # Tight enough that gross exposure, open orders and the rate limit all reject some.
        risk=RiskConfig(max_gross_exposure=150_000, max_orders_per_minute=25, max_open_orders=40),
    )
    recorder = Recorder()
    engine = BacktestEngine(
        config=config, scorer=RuleScorer(config=RuleScorerConfig()), journal=recorder
    )
    for _ in range(260):
        engine.on_bars(sim.next_batch())
    return recorder


def test_rule_path_when_fixed_bars_then_journal_rows_equal_the_pinned_run():
    recorder = run_fixed_bars()
    reasons = recorder.reasons
    assert reasons["ok"] > 100
    assert {"max_gross_exposure", "order_rate_limit"} <= set(reasons)
    digest = hashlib.sha256(b"\n".join(recorder.rows)).hexdigest()
    assert digest == PINNED_DIGEST, dict(reasons)
