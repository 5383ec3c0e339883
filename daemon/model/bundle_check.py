"""`model verify` beyond the hashes: load every part of a bundle and score one chart end to end."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from daemon.errors import InputError
from daemon.model.active import LoadOptions, load_active
from daemon.model.loader import BundleUnusable, bundle_failure
from daemon.model.scoring import build_window
from strategy.types import Bar

if TYPE_CHECKING:  # torch loads only when a bundle does
    from vlm_engine.infer.engine import RuntimeName

_START = datetime(2024, 1, 2, tzinfo=UTC)


class BundleCheck(msgspec.Struct, frozen=True, kw_only=True):
    """What a loaded bundle answered for one synthetic window."""

    bundle_id: str
    scorer: str
    bars: int
    p_up: float
    runtime: str  # what ran CLIP's image tower


def synthetic_bars(count: int, *, bar_seconds: int, symbol: str = "CHECK") -> list[Bar]:
    """A deterministic random walk of `count` well-formed bars, aligned to bar_seconds."""
    rng = np.random.default_rng(7)
    closes = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, count)))
    start = _START + timedelta(seconds=bar_seconds)
    bars = []
    previous = float(closes[0])
    for i, close in enumerate(closes.tolist()):
        high = max(previous, close) * 1.001
        low = min(previous, close) * 0.999
        ts = start + timedelta(seconds=i * bar_seconds)
        bars.append(
            Bar(symbol=symbol, ts=ts, open=previous, high=high, low=low, close=close, volume=1e4)
        )
        previous = close
    return bars


def check_bundle(
    path: Path, *, spec_hash: str | None = None, runtime: RuntimeName = "auto"
) -> BundleCheck:
    """Load the bundle (CLIP on `runtime`, XGBoost, fusion) and score one chart; BundleUnusable when
    any step fails."""
    options = LoadOptions(mode="fused", spec_hash=spec_hash or "", runtime=runtime)
    model = load_active(Path(path), options)
    count = model.min_bars
    try:
        window = build_window(
            "CHECK",
            synthetic_bars(count, bar_seconds=model.bar_seconds),
            bar_seconds=model.bar_seconds,
            min_bars=count,
        )
        signals = model.scorer.score([window])
    except InputError:
        raise
    except Exception as e:  # whatever a loaded-but-broken bundle raises while scoring
        raise bundle_failure(path, e) from None
    if len(signals) != 1 or not math.isfinite(signals[0].p_up):
        msg = f"{path}: the bundle loads but scored a chart as {signals!r}"
        raise BundleUnusable(msg)
    return BundleCheck(
        bundle_id=model.bundle_id or "",
        scorer=model.scorer.name,
        bars=count,
        p_up=signals[0].p_up,
        runtime=model.bundle.engine.runtime if model.bundle is not None else "",
    )
