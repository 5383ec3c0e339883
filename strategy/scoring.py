"""The scorer interface: windows in, one Signal per window out (rules now, CLIP/XGBoost later)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from strategy.bars import Window
from strategy.types import Signal


@runtime_checkable
class Scorer(Protocol):
    """Scores a batch of windows that closed at one timestamp.

    name goes into Signal.scorer; blocking=True asks the daemon to run score() in a thread.
    score() returns exactly one Signal per window, in the same order, with p_up and
    confidence in [0, 1]; a scorer with no opinion returns neutral_signal().
    """

    name: str
    blocking: bool

    def score(self, windows: Sequence[Window]) -> list[Signal]: ...


def neutral_signal(
    window: Window, scorer: str, reasons: tuple[str, ...] = (), *, ts: datetime | None = None
) -> Signal:
    """A Signal with no opinion (p_up 0.5, confidence 0) for one window; ts: window.ts when the
    caller already has it (a batch shares one close time: one datetime instead of one per window)."""
    return Signal(
        symbol=window.symbol,
        ts=window.ts if ts is None else ts,
        p_up=0.5,
        confidence=0.0,
        scorer=scorer,
        reasons=reasons,
    )


REJECTED = "rejected:"  # prefix of the reason of a signal refused before any model


def rejected_signal(window: Window, scorer: str, reason: str) -> Signal:
    """No opinion, because the window could not be scored; its reason says why (logged once)."""
    return neutral_signal(window, scorer, (f"{REJECTED}{reason}",))


def rejection(signal: Signal) -> str | None:
    """Why a signal was refused before any model, or None for a scored one."""
    first = signal.reasons[0] if signal.reasons else ""
    return first.removeprefix(REJECTED) if first.startswith(REJECTED) else None
