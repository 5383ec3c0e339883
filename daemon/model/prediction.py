"""What the model package answers a prediction request with: the scored signal and the bundle that
scored it, or a refusal of a chart that does not fit the loaded model."""

from __future__ import annotations

import msgspec

from daemon.errors import InputError
from strategy.types import Signal


class Prediction(msgspec.Struct, frozen=True, kw_only=True):
    """A scored window or chart: the signal, the bundle that scored it (None for the rule scorer)
    and, for a chart PNG, the CLIP model's calibrated pattern probabilities."""

    signal: Signal
    bundle_id: str | None
    patterns: dict[str, float] | None = None


class ChartRefused(InputError):
    """A chart PNG is fine as a file but cannot be scored by what is loaded (no bundle, other chart spec)."""
