"""Shadow mode: a second scorer (a whole model bundle) scores the same windows and never trades.

The pipeline runs it after the live batch's orders are at the broker, so it adds nothing to the
bar-to-order path. Its signals are journaled under the scorer name `<name>_shadow` and measured
against the live ones on the same windows: how often both lean the same way (P(up) on the same
side of 0.5) and the mean absolute difference of P(up). Each batch writes its `model.inferred`
line under the scorer label `<name>_shadow`, so /metrics times the shadow in its own series (its
chart rendering and drift stay off the live scorer's lines). A shadow that fails is logged and
counted; it never stops trading.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from daemon.model.scoring import log_inferred, score_windows
from strategy.bars import Window
from strategy.scoring import Scorer
from strategy.types import Signal


class ShadowStats(msgspec.Struct, frozen=True, kw_only=True):
    """Running comparison of the shadow's signals with the live ones, window for window."""

    bundle_id: str
    batches: int = 0
    signals: int = 0
    same_direction: int = 0
    abs_p_diff_sum: float = 0.0
    errors: int = 0

    @property
    def direction_agreement(self) -> float:
        return self.same_direction / self.signals if self.signals else float("nan")

    @property
    def mean_abs_p_diff(self) -> float:
        return self.abs_p_diff_sum / self.signals if self.signals else float("nan")

    def summary(self) -> dict[str, float | int | str]:
        return {
            "bundle_id": self.bundle_id,
            "batches": self.batches,
            "signals": self.signals,
            "direction_agreement": round(self.direction_agreement, 4),
            "mean_abs_p_diff": round(self.mean_abs_p_diff, 4),
            "errors": self.errors,
        }


class ShadowRunner:
    """Scores windows with the shadow scorer and keeps the comparison with the live signals."""

    def __init__(self, *, scorer: Scorer, bundle_id: str) -> None:
        self.scorer = scorer
        self.name = f"{scorer.name}_shadow"
        self.stats = ShadowStats(bundle_id=bundle_id)

    def compare(self, windows: Sequence[Window], live: Sequence[Signal]) -> list[Signal]:
        """The shadow's signals for the windows live scored (blocking: run it in a thread)."""
        batch = score_windows(self.scorer, windows)
        log_inferred(batch, scorer=self.name)
        shadow = [msgspec.structs.replace(s, scorer=self.name) for s in batch.signals]
        by_key = {(s.symbol, s.ts): s for s in live}
        same = 0
        diff = 0.0
        matched = 0
        for s in shadow:
            other = by_key.get((s.symbol, s.ts))
            if other is None:
                continue
            matched += 1
            same += (s.p_up > 0.5) == (other.p_up > 0.5)
            diff += abs(s.p_up - other.p_up)
        st = self.stats
        self.stats = msgspec.structs.replace(
            st,
            batches=st.batches + 1,
            signals=st.signals + matched,
            same_direction=st.same_direction + same,
            abs_p_diff_sum=st.abs_p_diff_sum + diff,
        )
        return shadow

    def failed(self) -> None:
        self.stats = msgspec.structs.replace(self.stats, errors=self.stats.errors + 1)
