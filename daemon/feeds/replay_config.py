"""feed.replay settings, apart from the replay feed itself: the config loads them at every start,
and the feed's readers (pandas, pyarrow: about 0.4 s of imports) load only when a replay runs."""

from __future__ import annotations

from typing import Annotated

import msgspec


class ReplayFeedConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """path: CSV or Parquet file; speed: file seconds per real second (0 = no waiting)."""

    path: str
    speed: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    symbols: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)] | None = None
    max_bars: Annotated[int, msgspec.Meta(gt=0)] | None = None
