"""ApiConfig: where the HTTP API listens and where its bearer token comes from."""

from __future__ import annotations

from typing import Annotated

import msgspec

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]  # 0: any free port (tests)


class ApiConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Loopback by default; mutating endpoints need the bearer token named by token_env."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Port = 8787
    token_env: str = "VLMTRADER_API_TOKEN"
    max_body_bytes: PositiveInt = 1_048_576
    max_predict_bars: PositiveInt = 5_000
    shutdown_timeout_seconds: PositiveFloat = 5.0
    # The web dashboard (GET /, /events, /api/*): read-only without the token, like the rest.
    dashboard: bool = True
    events_clients: PositiveInt = 8  # concurrent /events streams; more get 503
    events_queue: PositiveInt = 256  # events held per stream; a client that falls behind is dropped
    events_status_seconds: PositiveFloat = 2.0  # a status snapshot on every stream this often
    chart_bars: PositiveInt = 500  # bars kept per symbol for the candle charts
    equity_points: PositiveInt = 5_000  # equity samples kept (one per bar batch)
