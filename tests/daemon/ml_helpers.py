"""One quick (weak, seconds-to-build) full model bundle per test session, and copies to break."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.config import AppConfig
from daemon.model.slot import ModelSlot, daemon_slot
from strategy.backtest.data import frame_batches, iter_windows
from strategy.bars import BarStoreConfig, Window
from strategy.market_sim import SimMarketConfig, simulate_frame

_BUILT: list[Path] = []
WINDOW = 32  # the quick bundle's chart spec and features need 32 bars


def quick_bundle() -> Path:
    """The session's quick bundle (built by `vlmtrader model bootstrap --quick` on first use)."""
    if not _BUILT:
        from daemon.training import bootstrap, quick_config

        out = Path(tempfile.mkdtemp(prefix="vlmtrader-quick-bundle-")) / "bundle"
        bootstrap(quick_config(), out)
        _BUILT.append(out)
    return _BUILT[0]


def bundle_copy(tmp_path: Path, name: str = "copy") -> Path:
    """A private copy of the quick bundle that a test may corrupt."""
    copy = tmp_path / name
    shutil.copytree(quick_bundle(), copy)
    return copy


def drop_from_card(bundle: Path, *names: str) -> None:
    """Rewrite the model card as if the bundle never had these files (a CLIP-only bundle)."""
    card_path = bundle / "model_card.json"
    card = json.loads(card_path.read_text())
    for name in names:
        card["files"].pop(name, None)
    card_path.write_text(json.dumps(card))


def sample_windows(
    n_bars: int = 120, *, seed: int = 3, symbols: tuple[str, ...] = ("A", "B")
) -> list[Window]:
    """Live-shaped windows of WINDOW bars from the simulated market."""
    market = SimMarketConfig(symbols=symbols, seed=seed)
    batches = frame_batches(simulate_frame(market, datetime(2024, 3, 1, tzinfo=UTC), n_bars))
    return [w for chunk in iter_windows(batches, BarStoreConfig(window=WINDOW)) for w in chunk]


def started_slot(cfg: AppConfig, *, attach_to: Any = None) -> ModelSlot:
    """The trading daemon's slot as app.py builds it: created (cheap checks), attached, started,
    and its background warm-up (load, swap, shadow, bootstrap) awaited."""
    slot = daemon_slot(cfg)
    if attach_to is not None:
        slot.attach(attach_to)

    async def start() -> None:
        async with contextlib.AsyncExitStack() as stack:
            await slot.start(stack)
            await asyncio.wait_for(slot.warmed(), 120)

    asyncio.run(start())
    return slot
