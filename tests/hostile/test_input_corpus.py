"""Malformed inputs to the daemon's file and message decoders (configs, commands, bars, bar files,
journals), generated where sensible: each one is refused with a clear one-line error naming what
and where, and nothing is half-applied."""

from __future__ import annotations

import sqlite3
import typing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from daemon.bus.commands import CommandRejected, decode_command
from daemon.cli import main
from daemon.config import AppConfig, decode_config
from daemon.errors import ConfigError
from daemon.feeds.replay import ReplayFileError, load_bars_frame
from daemon.journal import Journal, JournalError
from strategy.bars import BarStore, BarStoreConfig
from strategy.types import Bar


def _float_keys(struct: type, prefix: str = "") -> list[str]:
    """Dotted keys of every float field (plain, Annotated or optional) of a config struct."""
    keys = []
    for field in msgspec.structs.fields(struct):
        tp = field.type
        candidates = [tp]
        if typing.get_origin(tp) is typing.Union or type(tp).__name__ == "UnionType":
            candidates = [a for a in typing.get_args(tp) if a is not type(None)]
        for candidate in candidates:
            base = (
                typing.get_args(candidate)[0]
                if typing.get_origin(candidate) is typing.Annotated
                else candidate
            )
            if base is float:
                keys.append(prefix + field.name)
            elif isinstance(base, type) and issubclass(base, msgspec.Struct):
                keys.extend(_float_keys(base, f"{prefix}{field.name}."))
    return keys


def _yaml_at(key: str, value: str) -> str:
    parts = key.split(".")
    lines = [f"{'  ' * i}{part}:" for i, part in enumerate(parts[:-1])]
    lines.append(f"{'  ' * (len(parts) - 1)}{parts[-1]}: {value}")
    return "\n".join(lines) + "\n"


FLOAT_KEYS = _float_keys(AppConfig)
NON_FINITE = [(key, v) for key in FLOAT_KEYS for v in (".inf", "-.inf", ".nan")]


@pytest.mark.parametrize(("key", "value"), NON_FINITE, ids=[f"{k}={v}" for k, v in NON_FINITE])
def test_config_when_number_not_finite_then_config_error_naming_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as e:
        decode_config(_yaml_at(key, value), source="cfg.yaml")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("cfg.yaml: ")
    assert key.split(".", 1)[0] in message


CONFIG_CASES: list[tuple[str, str, str]] = [
    ("window-overflow", "bars:\n  window: 99999999999\n", "window"),
    ("window-date-span", "bars:\n  window: 100000\n  bar_seconds: 86400\n", "20 years"),
    ("window-too-small", "bars:\n  window: 2\n", "window"),
    ("bar-seconds-zero", "bars:\n  bar_seconds: 0\n", "bar_seconds"),
    ("account-topic-wildcards", "account: a/b/#\n", "account"),
    ("account-plus", "account: a+b\n", "account"),
    ("account-space", "account: 'a b'\n", "account"),
    ("account-empty", "account: ''\n", "account"),
    ("account-5mb", "account: " + "a" * 5_000_000 + "\n", "account"),
    ("account-number", "account: [1]\n", "account"),
    ("string-too-long", "state_dir: " + "s" * 5000 + "\n", "state_dir"),
    ("reason-bundle-long", "scorer:\n  bundle: " + "b" * 5000 + "\n", "bundle"),
    ("unknown-top-key", "bogus: 1\n", "bogus"),
    ("unknown-nested-key", "risk:\n  max_dailyloss: 1\n", "max_dailyloss"),
    ("wrong-type", "risk:\n  max_daily_loss: lots\n", "max_daily_loss"),
    ("negative-limit", "risk:\n  max_daily_loss: -5\n", "max_daily_loss"),
    ("mode-unknown", "mode: yolo\n", "mode"),
    ("live-unconfirmed", "mode: ib-live\nfeed:\n  kind: ib\nib:\n  contracts: []\n", "ib"),
    ("not-a-mapping", "- 1\n- 2\n", "cfg.yaml"),
    ("bad-yaml", "risk: [\n", "not valid YAML"),
    ("tabs-yaml", "risk:\n\tmax_daily_loss: 1\n", "cfg.yaml"),
    ("anchor-bomb", "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n", "cfg.yaml"),
    ("replay-missing", "feed:\n  kind: replay\n", "feed.replay"),
    ("mqtt-feed-missing-source", "feed:\n  kind: mqtt\n", "bar_source"),
    (
        "sim-bar-seconds-differ",
        "feed:\n  sim:\n    market:\n      bar_seconds: 30\n",
        "bar_seconds",
    ),
    ("journal-sync-bogus", "journal:\n  synchronous: sometimes\n", "synchronous"),
    (
        "reconnect-swapped",
        "mqtt:\n  enabled: true\n  reconnect_min_seconds: 10\n  reconnect_max_seconds: 1\n",
        "reconnect",
    ),
    ("jump-negative", "bars:\n  max_jump_atr: -1\n", "max_jump_atr"),
    ("collar-negative", "broker:\n  price_collar: -0.5\n", "price_collar"),
    ("partial-not-bool", "partial: maybe\n", "partial"),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_config_when_malformed_then_one_line_config_error(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        decode_config(text, source="cfg.yaml")
    assert "\n" not in str(e.value)
    assert expected in str(e.value)


@pytest.mark.parametrize(
    "text",
    ["risk:\n  max_daily_loss: .inf\n", "bars:\n  window: 99999999999\n", "account: a/b/#\n"],
)
def test_config_check_when_run_would_refuse_then_exit_2_one_line(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: ")


COMMANDS: list[tuple[str, bytes, str]] = [
    ("empty", b"", "malformed"),
    ("whitespace", b"   ", "malformed"),
    ("garbage", b"\x00\xff\x10", "malformed"),
    ("truncated", b'{"command": "pau', "malformed"),
    ("nested-deep", b"[" * 50_000 + b"]" * 50_000, "too_large"),
    ("unterminated-nesting", b"[" * 4_000, "invalid"),
    ("object-nesting", b'{"a":' * 600 + b"1" + b"}" * 600, "unknown_command"),
    ("too-large", b'{"command": "pause", "reason": "' + b"x" * 5_000 + b'"}', "too_large"),
    ("array", b"[]", "invalid"),
    ("number", b"7", "invalid"),
    ("null", b"null", "invalid"),
    ("no-command", b'{"reason": "x"}', "unknown_command"),
    ("unknown-command", b'{"command": "rm_rf"}', "unknown_command"),
    ("command-number", b'{"command": 1}', "unknown_command"),
    ("unknown-field", b'{"command": "pause", "extra": 1}', "invalid"),
    ("reason-long", b'{"command": "pause", "reason": "' + b"r" * 300 + b'"}', "invalid"),
    ("reason-object", b'{"command": "pause", "reason": {}}', "invalid"),
    ("request-id-empty", b'{"command": "pause", "request_id": ""}', "invalid"),
    ("request-id-unicode", '{"command": "pause", "request_id": "\u00e9"}'.encode(), "invalid"),
    ("state-unknown", b'{"command": "set_state", "state": "panic"}', "invalid"),
    ("state-missing", b'{"command": "set_state"}', "invalid"),
    ("symbol-empty", b'{"command": "flatten", "symbol": ""}', "invalid"),
    ("symbol-wildcard", b'{"command": "flatten", "symbol": "#"}', "invalid"),
    ("symbol-long", b'{"command": "flatten", "symbol": "' + b"A" * 40 + b'"}', "invalid"),
    ("path-empty", b'{"command": "reload_bundle", "path": ""}', "invalid"),
    ("path-list", b'{"command": "reload_bundle", "path": ["a"]}', "invalid"),
    ("nan", b'{"command": "pause", "reason": NaN}', "malformed"),
    ("duplicate-command", b'{"command": "pause", "command": "resume"}', "unknown_command"),
]


@pytest.mark.parametrize(("raw", "reason"), [c[1:] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_command_when_malformed_then_rejected_with_reason_and_one_line(
    raw: bytes, reason: str
) -> None:
    with pytest.raises(CommandRejected) as e:
        decode_command(raw, max_bytes=4_096)
    assert "\n" not in str(e.value)
    assert e.value.reason == reason, str(e.value)


T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def _bar(i: int = 40, **changes: object) -> Bar:
    fields: dict[str, object] = {
        "symbol": "SPY",
        "ts": T0 + timedelta(minutes=i),
        "open": 100.0,
        "high": 100.5,
        "low": 99.5,
        "close": 100.2,
        "volume": 1000.0,
    }
    fields.update(changes)
    return Bar(**fields)  # type: ignore[arg-type]


BARS: list[tuple[str, dict[str, object], str]] = [
    ("nan-close", {"close": float("nan")}, "non_finite"),
    ("inf-high", {"high": float("inf")}, "non_finite"),
    ("nan-volume", {"volume": float("nan")}, "non_finite"),
    ("zero-open", {"open": 0.0}, "non_positive_price"),
    ("negative-low", {"low": -1.0}, "non_positive_price"),
    ("negative-volume", {"volume": -1.0}, "negative_volume"),
    ("high-below-low", {"high": 99.0, "low": 100.0}, "high_below_low"),
    ("high-below-close", {"high": 100.1}, "high_below_body"),
    ("low-above-open", {"low": 100.1}, "low_above_body"),
    ("naive-ts", {"ts": datetime(2024, 3, 1, 15, 10)}, "naive_ts"),
    ("misaligned-ts", {"ts": T0 + timedelta(minutes=20, seconds=7)}, "misaligned_ts"),
    ("microsecond-ts", {"ts": T0 + timedelta(minutes=20, microseconds=1)}, "misaligned_ts"),
    ("year-9999", {"ts": datetime(9999, 1, 1, tzinfo=UTC)}, "implausible_ts"),
    ("year-1", {"ts": datetime(1, 1, 1, tzinfo=UTC)}, "implausible_ts"),
    ("epoch", {"ts": datetime(1970, 1, 1, tzinfo=UTC)}, "implausible_ts"),
    ("duplicate-ts", {"ts": T0 + timedelta(minutes=19)}, "duplicate_ts"),
    ("out-of-order", {"ts": T0 + timedelta(minutes=3)}, "out_of_order"),
    (
        "x1000",
        {"open": 99_300.0, "high": 99_400.0, "low": 99_200.0, "close": 99_324.0},
        "price_jump",
    ),
    ("x0.001", {"open": 0.1, "high": 0.11, "low": 0.09, "close": 0.1}, "price_jump"),
    ("high-spike", {"high": 5_000.0}, "price_jump"),
    ("low-spike", {"low": 0.5}, "price_jump"),
    ("future", {"ts": T0 + timedelta(days=2)}, "future_ts"),
]


@pytest.mark.parametrize(("changes", "reason"), [c[1:] for c in BARS], ids=[c[0] for c in BARS])
def test_bar_when_malformed_then_rejected_with_reason_and_window_unchanged(
    changes: dict[str, object], reason: str
) -> None:
    store = BarStore(config=BarStoreConfig(window=8, max_future_seconds=60))
    clock = T0 + timedelta(minutes=20)
    for i in range(20):
        assert store.add(_bar(i, close=100.2 + 0.01 * (i % 3)), now=clock) is None
    before = store.window("SPY")
    assert before is not None
    bar = _bar(20, **changes)
    rejected = store.add(bar, now=clock)
    assert rejected is not None
    assert rejected.reason == reason
    assert "\n" not in rejected.detail
    after = store.window("SPY")
    assert after is not None
    assert after.timestamps.tolist() == before.timestamps.tolist()


HEADER = "symbol,ts,open,high,low,close,volume\n"
GOOD = "SPY,2024-03-01T14:30:00Z,99,100,98,99.5,1000\n"
FILES: list[tuple[str, str, str]] = [
    ("empty", "", ""),
    ("header-only", HEADER, "no bars"),
    ("missing-column", "symbol,ts,open,high,low,close\nSPY,1,1,1,1,1\n", "volume"),
    ("ts-minus-one", HEADER + GOOD + "SPY,-1,99,100,98,99.5,1000\n", "row 2"),
    ("ts-year-9999", HEADER + GOOD + "SPY,9999-12-31T00:00:00Z,99,100,98,99.5,1000\n", "row 2"),
    ("ts-text", HEADER + GOOD + "SPY,yesterday,99,100,98,99.5,1000\n", "row 2"),
    ("ts-empty", HEADER + GOOD + "SPY,,99,100,98,99.5,1000\n", "ts"),
    ("ts-huge-epoch", HEADER + "SPY,1e30,99,100,98,99.5,1000\n", "row 1"),
    ("price-text", HEADER + "SPY,2024-03-01T14:30:00Z,ninety,100,98,99.5,1000\n", "open"),
    ("volume-text", HEADER + "SPY,2024-03-01T14:30:00Z,99,100,98,99.5,lots\n", "volume"),
    ("symbol-empty", HEADER + ",2024-03-01T14:30:00Z,99,100,98,99.5,1000\n", "symbol"),
    ("binary", "\x00\x01\x02garbage", ""),
    ("ragged-row", HEADER + GOOD + "SPY,2024-03-01T14:31:00Z,99\n", ""),
    ("extra-cells", HEADER + "SPY,2024-03-01T14:31:00Z,99,100,98,99.5,1000,7,8\n", ""),
]


@pytest.mark.parametrize(("content", "expected"), [c[1:] for c in FILES], ids=[c[0] for c in FILES])
def test_bar_file_when_malformed_then_one_line_error_naming_file(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "bars.csv"
    path.write_text(content)
    with pytest.raises(ReplayFileError) as e:
        load_bars_frame(path)
    message = str(e.value)
    assert "\n" not in message
    assert str(path) in message
    assert expected in message


def _damage_journal(path: Path, how: str) -> None:
    with Journal(path) as journal:
        journal.record(kv={"trading_state": "active"})
    con = sqlite3.connect(path)
    if how == "order-json":
        con.execute(
            "INSERT INTO orders (id, client_order_id, symbol, side, order_type, quantity, status, "
            "filled_quantity, average_fill_price, reason, created_ts, updated_ts, data) VALUES "
            "(3, 'X-1', 'S', 'buy', 'market', 1, 'accepted', 0, 0, '', 't', 't', '{bad')"
        )
    elif how == "order-status":
        con.execute(
            "INSERT INTO orders (id, client_order_id, symbol, side, order_type, quantity, status, "
            "filled_quantity, average_fill_price, reason, created_ts, updated_ts, data) VALUES "
            "(4, 'X-1', 'S', 'buy', 'market', 1, 'exploded', 0, 0, '', 't', 't', "
            '\'{"client_order_id": "X-1", "symbol": "S", "side": "buy", "quantity": 1, '
            '"order_type": "market", "created_ts": "2024-03-01T00:00:00+00:00"}\')'
        )
    elif how == "order-wrong-shape":
        con.execute(
            "INSERT INTO orders (id, client_order_id, symbol, side, order_type, quantity, status, "
            "filled_quantity, average_fill_price, reason, created_ts, updated_ts, data) VALUES "
            "(5, 'X-1', 'S', 'buy', 'market', 1, 'accepted', 0, 0, '', 't', 't', '[1, 2]')"
        )
    elif how == "position-json":
        con.execute("INSERT INTO positions VALUES ('S', 1, 1, 0, 'not json')")
    elif how == "fill-json":
        con.execute(
            "INSERT INTO fills (id, fill_id, client_order_id, symbol, side, quantity, price, "
            "commission, ts, data) VALUES (9, 'F', 'C', 'S', 'buy', 1, 1, 0, 't', '{\"x\": 1}')"
        )
    elif how == "future-schema":
        con.execute("PRAGMA user_version = 999")
    con.commit()
    con.close()
    if how == "not-a-database":
        path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4096)
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[:100])


def _open_and_read(path: Path) -> None:
    """What the daemon reads at start: orders, fills and positions."""
    with Journal(path) as journal:
        journal.load_orders()
        journal.load_fills()
        journal.load_positions()


JOURNALS = [
    ("order-json", "corrupt row 3 in table orders"),
    ("order-status", "corrupt row 4 in table orders"),
    ("order-wrong-shape", "corrupt row 5 in table orders"),
    ("position-json", "corrupt row S in table positions"),
    ("fill-json", "corrupt row 9 in table fills"),
    ("future-schema", "newer than this build"),
    ("not-a-database", "corrupt"),
    ("truncated", "journal"),
]


@pytest.mark.parametrize(("how", "expected"), JOURNALS, ids=[j[0] for j in JOURNALS])
def test_journal_when_damaged_then_journal_error_naming_file_and_place(
    tmp_path: Path, how: str, expected: str
) -> None:
    path = tmp_path / "journal.sqlite"
    _damage_journal(path, how)
    with pytest.raises(JournalError) as e:
        _open_and_read(path)
    assert "\n" not in str(e.value)
    assert str(path) in str(e.value)
    assert expected in str(e.value)
