"""The `explain:` section: whether orders are explained, how much is kept, how much is shown."""

from __future__ import annotations

from typing import Annotated

import msgspec

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]


class ExplainConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """enabled: write an explanation per order (after it is at the broker, in a worker thread).
    max_charts / max_age_days: retention of the chart PNGs under <state_dir>/charts (the oldest
    go first; explanations older than max_age_days are deleted with them). top_k: CLIP label texts
    and XGBoost contributions per explanation; analogs_k: nearest training charts (0: none).
    backlog: orders waiting for the worker; over it an order goes unexplained (counted, logged)."""

    enabled: bool = True
    max_charts: PositiveInt = 20_000
    max_age_days: PositiveInt = 30
    top_k: PositiveInt = 5
    analogs_k: NonNegativeInt = 5
    backlog: PositiveInt = 1_000
