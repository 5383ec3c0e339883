"""The backtest's values: its config and what a run produced.

Outside strategy/backtest/engine.py so that msgspec reads their annotations when engine.py is
compiled (mypyc).
"""

from __future__ import annotations

import msgspec
import numpy as np

from strategy.bars_types import BarStoreConfig
from strategy.risk_types import RiskConfig, TradingStateChange
from strategy.sim_broker_types import SimBrokerConfig
from strategy.target_strategy_types import SizingMiss, StrategyConfig
from strategy.types import Fill, Order


class BacktestConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The same component configs the daemon composes, plus the starting cash."""

    starting_cash: float = 100_000.0
    bars: BarStoreConfig = msgspec.field(default_factory=BarStoreConfig)
    strategy: StrategyConfig = msgspec.field(default_factory=StrategyConfig)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)
    broker: SimBrokerConfig = msgspec.field(default_factory=SimBrokerConfig)
    order_prefix: str = "BT"


class BacktestRun(msgspec.Struct, kw_only=True):
    """What one run produced: equity and exposure per traded timestamp, plus orders and fills.

    And why it traded as it did: how many signals cleared the strategy's entry rule (and the
    strongest |2p-1| and confidence seen), intents that reached risk, rejections by reason,
    trading-state changes (halts), entries that rounded to 0 quantity, and the last marks.
    """

    name: str
    ts: list[int] = msgspec.field(default_factory=list)
    equity: list[float] = msgspec.field(default_factory=list)
    exposure: list[float] = msgspec.field(default_factory=list)
    orders: list[Order] = msgspec.field(default_factory=list)
    fills: list[Fill] = msgspec.field(default_factory=list)
    signals: int = 0
    signals_cleared: int = 0
    max_edge: float = 0.0
    max_confidence: float = 0.0
    decisions: int = 0
    risk_rejections: int = 0
    rejections: dict[str, int] = msgspec.field(default_factory=dict)
    state_changes: list[TradingStateChange] = msgspec.field(default_factory=list)
    sizing_misses: int = 0
    last_sizing_miss: SizingMiss | None = None
    bars_rejected: int = 0
    last_prices: dict[str, float] = msgspec.field(default_factory=dict)

    def equity_array(self) -> np.ndarray:
        return np.asarray(self.equity, dtype=np.float64)
