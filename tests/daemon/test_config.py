"""Config errors: one test per class of bad YAML, each a one-line message naming the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import AppConfig, decode_config, load_config
from daemon.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def error_for(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        decode_config(text, source="cfg.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cfg.yaml: ")
    return message


def test_decode_when_empty_mapping_then_defaults_are_paper_sim() -> None:
    cfg = decode_config("{}")
    assert isinstance(cfg, AppConfig)
    assert cfg.mode == "paper-sim"
    assert cfg.feed.kind == "sim"


DAEMON_CONFIGS = sorted(
    p
    for p in (REPO / "config").glob("*.yaml")
    if not p.name.startswith(("dataset", "ib-live", "build-"))
)


@pytest.mark.parametrize("path", DAEMON_CONFIGS, ids=lambda p: p.name)
def test_load_when_shipped_example_then_valid(path: Path) -> None:
    assert load_config(path).mode in ("paper-sim", "ib-paper", "ib-live", "backtest")


def test_load_when_shipped_live_example_then_refused_until_confirmed(tmp_path: Path) -> None:
    live = REPO / "config" / "ib-live.yaml"
    with pytest.raises(ConfigError, match="confirm_live: true"):
        load_config(live)
    confirmed = tmp_path / "live.yaml"
    confirmed.write_text(live.read_text().replace("confirm_live: false", "confirm_live: true"))
    assert load_config(confirmed).mode == "ib-live"


def test_decode_when_unknown_key_then_error_names_key_path() -> None:
    message = error_for("risk:\n  max_positon: 3\n")
    assert "max_positon" in message
    assert "$.risk" in message


def test_decode_when_wrong_type_then_error_names_expected_type_and_path() -> None:
    message = error_for("starting_cash: lots\n")
    assert "$.starting_cash" in message
    assert "float" in message


def test_decode_when_constraint_violated_then_error_names_bound() -> None:
    message = error_for("bars:\n  window: 0\n")
    assert "$.bars.window" in message
    assert ">=" in message


def test_decode_when_enum_value_unknown_then_error_lists_path() -> None:
    message = error_for("mode: yolo\n")
    assert "$.mode" in message


def test_decode_when_order_path_priority_unknown_then_error_names_the_key() -> None:
    message = error_for("order_path_priority: urgent\n")
    assert "$.order_path_priority" in message
    assert message.endswith("(one of: normal, realtime)")  # the allowed values are listed


def test_decode_when_nested_enum_value_unknown_then_error_lists_the_allowed_values() -> None:
    message = error_for("scorer:\n  runtime: fast\n")
    assert "$.scorer.runtime" in message
    assert message.endswith("(one of: auto, onnx, onnx-int8, torch)")


def test_decode_when_yaml_malformed_then_error_says_not_valid_yaml() -> None:
    message = error_for("risk: [unclosed\n")
    assert "not valid YAML" in message


def test_decode_when_live_without_confirmation_then_error_says_how_to_confirm() -> None:
    message = error_for("mode: ib-live\n")
    assert "confirm_live: true" in message


def test_decode_when_replay_without_path_then_error_says_what_to_add() -> None:
    message = error_for("feed:\n  kind: replay\n")
    assert "feed.replay" in message


def test_decode_when_bar_sizes_disagree_then_error_says_make_them_equal() -> None:
    message = error_for("bars:\n  bar_seconds: 300\n")
    assert "make them equal" in message


def test_load_when_file_missing_then_error_names_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_load_when_file_empty_then_error_names_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        load_config(empty)
