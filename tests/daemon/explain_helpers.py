"""The live pipeline over real parts (SQLite journal, paper venue, the quick bundle's ML scorer) with
the explainer on or off, for the explanation tests and bench/bench_explain.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.execution.paper import PaperExecution
from daemon.explain.config import ExplainConfig
from daemon.explain.worker import Explainer
from daemon.journal import Journal
from daemon.model.active import ActiveModel, LoadOptions, load_active
from daemon.pipeline import Pipeline
from strategy.bars import BarStore, BarStoreConfig, Window
from strategy.book import Book
from strategy.market_sim import MarketSimulator, SimMarketConfig
from strategy.risk import RiskConfig, RiskEngine
from strategy.scoring import Scorer
from strategy.sim_broker import SimBrokerConfig
from strategy.target_strategy import StrategyConfig, TargetStrategy
from strategy.types import Bar, Order, OrderType, Side

START = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
WINDOW = 32
# Trade on any opinion: the quick bundle is weak, and the tests need orders to explain.
EAGER = StrategyConfig(
    hold_bars=3, position_notional=2_000, min_confidence=0.0, enter_threshold=0.51
)

_MODELS: dict[Path, ActiveModel] = {}


def ml_model(bundle: Path) -> ActiveModel:
    """The bundle loaded and warm, once per session."""
    if bundle not in _MODELS:
        _MODELS[bundle] = load_active(bundle, LoadOptions(runtime="torch"))
    return _MODELS[bundle]


def market(n: int, *, symbols: int = 3, seed: int = 5) -> list[list[Bar]]:
    config = SimMarketConfig(
        symbols=[f"SIM{i}" for i in range(symbols)], seed=seed, pattern_rate=0.1
    )
    sim = MarketSimulator(config=config, start=START)
    return [sim.next_batch() for _ in range(n)]


@contextlib.contextmanager
def explained_pipeline(
    directory: Path,
    *,
    scorer: Scorer,
    bundle_for: Callable[[Any], Any] | None,
    explain: ExplainConfig | None,
) -> Iterator[Pipeline]:
    """A pipeline with its journal, venue, explanation store and charts in directory; explain None:
    no explainer at all (the daemon with `explain: {enabled: false}` has none running)."""
    directory.mkdir(parents=True, exist_ok=True)
    journal = Journal(directory / "journal.sqlite", checkpoint_seconds=None)
    journal.open()
    venue = PaperExecution(config=SimBrokerConfig(), path=directory / "venue.sqlite")
    pipeline = Pipeline(
        store=BarStore(config=BarStoreConfig(window=WINDOW)),
        scorer=scorer,
        strategy=TargetStrategy(config=EAGER),
        risk=RiskEngine(config=RiskConfig()),
        book=Book(starting_cash=100_000),
        journal=journal,
        execution=venue,
        order_prefix="T",
    )
    try:
        if explain is None:
            yield pipeline
        else:
            with Explainer(
                config=explain,
                state_dir=directory,
                bundle_for=bundle_for,
                busy=lambda: pipeline.busy_since is not None,
            ) as ex:
                pipeline.explainer = ex
                yield pipeline
    finally:
        venue.close()
        journal.close()


def run(pipeline: Pipeline, batches: list[list[Bar]]) -> None:
    async def go() -> None:
        for batch in batches:
            await pipeline.on_bars(batch)

    asyncio.run(go())


PLANTED = ("three_white_soldiers", "three_black_crows")
_PLANTED_BUILT: list[Path] = []


def planted_config() -> Any:
    """The quick bootstrap on a market planting two patterns often, trained long enough (20 epochs
    over 4,000 bars) for CLIP to tell them apart: about 20 s on a quiet 2-core machine."""
    import msgspec

    from daemon.training import quick_config

    quick = quick_config()
    return msgspec.structs.replace(
        quick,
        market=SimMarketConfig(
            symbols=("SIMA", "SIMB"), pattern_rate=0.12, seed=11, patterns=PLANTED
        ),
        bars=4_000,
        train=msgspec.structs.replace(quick.train, epochs=20),
    )


def planted_bundle() -> Path:
    """A bundle whose CLIP reads the planted patterns (with its analog index), once per session."""
    if not _PLANTED_BUILT:
        import tempfile

        from daemon.training import bootstrap

        out = Path(tempfile.mkdtemp(prefix="vlmtrader-planted-bundle-")) / "bundle"
        bootstrap(planted_config(), out)
        _PLANTED_BUILT.append(out)
    return _PLANTED_BUILT[0]


def buy_orders(windows: Sequence[Window], prefix: str) -> list[Order]:
    """One market buy per window, decided at its bar close (ids prefix-0, prefix-1, ...)."""
    return [
        Order(
            client_order_id=f"{prefix}-{i}",
            symbol=w.symbol,
            side=Side.BUY,
            quantity=1.0,
            order_type=OrderType.MARKET,
            created_ts=datetime.fromtimestamp(int(w.timestamps[-1]), tz=UTC),
        )
        for i, w in enumerate(windows)
    ]
