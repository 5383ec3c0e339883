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
