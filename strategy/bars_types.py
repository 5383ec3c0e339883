"""The bar store's values: its config, a refused bar, a window reset and a batch add's result.

Outside strategy/bars.py so that msgspec reads their annotations when bars.py is compiled (mypyc).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from strategy.types import Bar

GapPolicy = Literal["reset", "reject", "accept"]


class BarStoreConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Window length, bar spacing and what to do when bars are missing.

    A gap is the number of missing bars between two consecutive bars of a symbol. Gaps of at
    most max_gap_bars are accepted; longer ones reset the symbol's window (reset), are
    rejected (reject), or are accepted anyway (accept).

    A price jump is a bar whose high or low lies further from the previous close than
    max_jump_atr times the symbol's average true range (over jump_lookback bars) and than
    min_jump_fraction of the previous close. It is rejected (price_jump) unless the next bar
    confirms the new level (lies within the same limit of the rejected bar's close), which is
    then stored: a real gap costs one bar, a fat-fingered x1000 print never enters a window.
    The range is learnt again after a gap longer than max_gap_bars. max_jump_atr 0 turns the
    check off. max_future_seconds bounds how far a bar may close
    after `now` when the caller passes a clock (live feeds).
    """

    window: Annotated[int, msgspec.Meta(ge=8, le=100_000)] = 64
    bar_seconds: Annotated[int, msgspec.Meta(gt=0, le=7 * 86_400)] = 60
    gap_policy: GapPolicy = "reset"
    max_gap_bars: Annotated[int, msgspec.Meta(ge=0)] = 5
    max_jump_atr: Annotated[float, msgspec.Meta(ge=0, le=1e6)] = 25.0
    min_jump_fraction: Annotated[float, msgspec.Meta(ge=0, le=1e6)] = 0.1
    jump_lookback: Annotated[int, msgspec.Meta(ge=2, le=10_000)] = 14
    max_future_seconds: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 300.0


class BarRejected(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Why one bar was refused: reason is a stable code, detail a sentence for humans."""

    symbol: str
    ts: datetime
    reason: str
    detail: str


class WindowReset(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A symbol's window was emptied because `missing_bars` bars were missing before the bar at ts."""

    symbol: str
    ts: datetime
    missing_bars: int
    policy: GapPolicy
    after: datetime | None  # the last bar before the gap


class BarsAdded(msgspec.Struct, frozen=True):
    """What a batch add did: the bars stored and the bars refused, each in batch order, and the
    symbols of the bars stored (the kernel's list of symbols whose window moved)."""

    accepted: list[Bar]
    rejected: list[BarRejected]
    symbols: list[str] = []  # an empty default is copied per instance, as a factory would be
