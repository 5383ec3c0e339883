"""The shipped IB configs: their `ib:` sections decode into IbConfig and pass its cross-field rules."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from daemon.ib.config import IbConfig, check_ib

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("name", "port"), [("ib-paper.yaml", 4002), ("ib-live.yaml", 4001)])
def test_shipped_config_when_decoded_then_ib_section_is_valid(name: str, port: int) -> None:
    raw = msgspec.yaml.decode((REPO / "config" / name).read_bytes())
    cfg = msgspec.convert(raw["ib"], type=IbConfig)
    assert cfg.port == port
    assert raw["feed"]["kind"] == "ib"
    assert check_ib(cfg, bar_seconds=raw["bars"]["bar_seconds"]) is None


def test_live_config_when_shipped_then_not_confirmed() -> None:
    raw = msgspec.yaml.decode((REPO / "config" / "ib-live.yaml").read_bytes())
    assert raw["mode"] == "ib-live"
    assert raw["confirm_live"] is False


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"contracts": []}, "ib.contracts is empty"),
        ({"bar_size": "7 mins"}, "not an IB bar size"),
        ({"client_id": 1, "order_client_id": 1}, "order_client_id must differ"),
        ({"contracts": [{"symbol": "ES", "sec_type": "FUT"}]}, "needs last_trade_date"),
        ({"contracts": [{"symbol": "EUR", "sec_type": "CASH"}]}, "six letters"),
    ],
)
def test_check_ib_when_fields_conflict_then_sentence_names_the_fix(
    fields: dict[str, object], problem: str
) -> None:
    base: dict[str, object] = {"contracts": [{"symbol": "AAPL"}]}
    cfg = msgspec.convert({**base, **fields}, type=IbConfig)
    message = check_ib(cfg)
    assert message is not None
    assert problem in message


def test_check_ib_when_bar_size_differs_from_bars_then_error() -> None:
    cfg = msgspec.convert({"contracts": [{"symbol": "AAPL"}], "bar_size": "5 mins"}, type=IbConfig)
    assert "differs from bars.bar_seconds" in (check_ib(cfg, bar_seconds=60) or "")


def test_decode_when_unknown_ib_key_then_validation_error_names_it() -> None:
    with pytest.raises(msgspec.ValidationError, match="prot"):
        msgspec.convert({"prot": 4002}, type=IbConfig)
