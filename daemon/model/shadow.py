"""Shadow mode: a second scorer (a whole model bundle) scores the same windows and never trades.

The pipeline runs it after the live batch's orders are at the broker, so it adds nothing to the
bar-to-order path. Its signals are journaled under the scorer name `<name>_shadow` and measured
against the live ones on the same windows: how often both lean the same way (P(up) on the same
side of 0.5) and the mean absolute difference of P(up). Each batch writes its `model.inferred`
line under the scorer label `<name>_shadow`, so /metrics times the shadow in its own series (its
chart rendering and drift stay off the live scorer's lines). A shadow that fails is logged and
counted; it never stops trading.

Every `report_every` batches one `shadow.compared` line gives the comparison over those batches
(and since start), a warning when the two disagree on direction more often than they agree; the
last such report is served as the vlmtrader_shadow_recent_* gauges.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import structlog

from daemon.model.scoring import log_inferred, score_windows
from strategy.bars import Window
from strategy.scoring import Scorer
from strategy.types import Signal

log = structlog.get_logger("daemon.model.shadow")

REPORT_EVERY_BATCHES = 100  # one shadow.compared line per this many shadow batches
# Below this share of windows leaning the same way, shadow.compared is a warning: the two models
# disagree on direction more often than they agree.
WARN_BELOW_AGREEMENT = 0.5


class ShadowStats(msgspec.Struct, frozen=True, kw_only=True):
    """Running comparison of the shadow's signals with the live ones, window for window."""

    bundle_id: str
    batches: int = 0
    signals: int = 0
    same_direction: int = 0
    abs_p_diff_sum: float = 0.0
    errors: int = 0
    # The comparison over the batches of the last shadow.compared report (nan before the first).
    recent_direction_agreement: float = float("nan")
    recent_mean_abs_p_diff: float = float("nan")

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

    def __init__(
        self, *, scorer: Scorer, bundle_id: str, report_every: int = REPORT_EVERY_BATCHES
    ) -> None:
        self.scorer = scorer
        self.name = f"{scorer.name}_shadow"
        self.stats = ShadowStats(bundle_id=bundle_id)
        self.report_every = report_every
        self._since_report = ShadowStats(bundle_id=bundle_id)  # the batches since the last report

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
        self.stats = _added(self.stats, matched, same, diff)
        self._since_report = _added(self._since_report, matched, same, diff)
        if self._since_report.batches >= self.report_every:
            self._report()
        return shadow

    def _report(self) -> None:
        """One `shadow.compared` line over the batches since the last one; the gauges follow it."""
        window, self._since_report = self._since_report, ShadowStats(bundle_id=self.stats.bundle_id)
        agreement, gap = window.direction_agreement, window.mean_abs_p_diff
        self.stats = msgspec.structs.replace(
            self.stats, recent_direction_agreement=agreement, recent_mean_abs_p_diff=gap
        )
        emit = log.warning if agreement < WARN_BELOW_AGREEMENT else log.info
        emit(
            "shadow.compared",
            scorer=self.name,
            bundle_id=self.stats.bundle_id,
            batches=window.batches,
            signals=window.signals,
            direction_agreement=round(agreement, 4),
            mean_abs_p_diff=round(gap, 4),
            total_signals=self.stats.signals,
            total_direction_agreement=round(self.stats.direction_agreement, 4),
            total_mean_abs_p_diff=round(self.stats.mean_abs_p_diff, 4),
            errors=self.stats.errors,
        )

    def failed(self) -> None:
        self.stats = msgspec.structs.replace(self.stats, errors=self.stats.errors + 1)


def _added(stats: ShadowStats, matched: int, same: int, diff: float) -> ShadowStats:
    """stats with one more batch of `matched` windows compared."""
    return msgspec.structs.replace(
        stats,
        batches=stats.batches + 1,
        signals=stats.signals + matched,
        same_direction=stats.same_direction + same,
        abs_p_diff_sum=stats.abs_p_diff_sum + diff,
    )
