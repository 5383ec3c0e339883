"""The SQLite journal against real files: round trips, one transaction per batch, crash safety."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.errors import InputError, InvariantError
from daemon.journal import SCHEMA_VERSION, TABLES, Journal, JournalConfig, JournalError
from daemon.journal_schema import ORDER_STATUS
from strategy.types import (
    Fill,
    Order,
    OrderEvent,
    OrderIntent,
    OrderStatus,
    OrderType,
    Position,
    RiskDecision,
    Side,
    Signal,
    TradingState,
)

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


class RejectedBar(msgspec.Struct, frozen=True, kw_only=True):
    """Stands in for strategy.bars.BarRejected: the journal takes any Struct with these fields."""

    symbol: str
    ts: datetime
    reason: str
    detail: str = ""


class StateChange(msgspec.Struct, frozen=True, kw_only=True):
    """Stands in for strategy.risk.TradingStateChange."""

    previous: TradingState
    current: TradingState
    reason: str
    ts: datetime


def order(n: int = 1, *, symbol: str = "AAA", qty: float = 10.0, prefix: str = "VT") -> Order:
    return Order(
        client_order_id=f"{prefix}-{n}",
        symbol=symbol,
        side=Side.BUY,
        quantity=qty,
        order_type=OrderType.LIMIT,
        limit_price=101.5,
        created_ts=T0 + timedelta(minutes=n),
        reason="engulfing",
    )


def fill(fill_id: str, coid: str = "VT-1", *, qty: float = 4.0, price: float = 100.0) -> Fill:
    return Fill(
        fill_id=fill_id,
        client_order_id=coid,
        symbol="AAA",
        side=Side.BUY,
        quantity=qty,
        price=price,
        commission=0.5,
        ts=T0 + timedelta(minutes=5),
    )


def signal(symbol: str = "AAA", minute: int = 0) -> Signal:
    return Signal(
        symbol=symbol,
        ts=T0 + timedelta(minutes=minute),
        p_up=0.7,
        confidence=0.4,
        scorer="rules",
        reasons=("hammer", "rsi_low"),
    )


def decision(accepted: bool = True) -> RiskDecision:
    intent = OrderIntent(symbol="AAA", ts=T0, side=Side.SELL, quantity=3.0, reason="exit")
    return RiskDecision(
        intent=intent, accepted=accepted, reason="ok" if accepted else "max_position", ts=T0
    )


def event(coid: str, status: OrderStatus, filled: float = 0.0, **kw: object) -> OrderEvent:
    return OrderEvent(
        client_order_id=coid,
        ts=T0 + timedelta(minutes=6),
        status=status,
        filled_quantity=filled,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def journal(tmp_path: Path):
    with Journal(tmp_path / "journal.sqlite") as j:
        yield j


# ---- config -------------------------------------------------------------------------------------
def test_decode_config_when_unknown_key_then_rejected():
    with pytest.raises(msgspec.ValidationError, match="Object contains unknown field `fsync`"):
        msgspec.json.decode(b'{"fsync": true}', type=JournalConfig)


def test_decode_config_when_bad_synchronous_then_rejected():
    with pytest.raises(msgspec.ValidationError, match=r"\$\.synchronous"):
        msgspec.json.decode(b'{"synchronous": "off"}', type=JournalConfig)


def test_default_config_when_empty_then_normal_and_relative_path():
    cfg = msgspec.json.decode(b"{}", type=JournalConfig)
    assert (cfg.path, cfg.synchronous, cfg.checkpoint_seconds) == ("journal.sqlite", "normal", 1.0)


def test_decode_config_when_checkpoint_period_not_positive_then_rejected():
    with pytest.raises(msgspec.ValidationError, match=r"> 0.0 - at `\$\.checkpoint_seconds`"):
        msgspec.json.decode(b'{"checkpoint_seconds": 0}', type=JournalConfig)


# ---- schema and lifecycle -----------------------------------------------------------------------
def test_open_when_new_file_then_wal_and_schema_version_set(tmp_path: Path):
    path = tmp_path / "j.sqlite"
    with Journal(path, synchronous="full") as j:
        assert j.schema_version() == SCHEMA_VERSION
        assert j.counts() == dict.fromkeys(TABLES, 0)
        assert j.writable()
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()


def test_open_when_schema_newer_than_build_then_journal_error(tmp_path: Path):
    path = tmp_path / "j.sqlite"
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(JournalError, match="newer than this build"):
        Journal(path).open()
    with Journal(tmp_path / "other.sqlite"):  # the lock of the failed open was released
        pass


def test_open_when_file_is_not_sqlite_then_one_line_journal_error(tmp_path: Path):
    path = tmp_path / "j.sqlite"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(JournalError, match="cannot open") as info:
        Journal(path).open()
    assert "\n" not in str(info.value)
    assert isinstance(info.value, InvariantError)


def test_open_when_directory_missing_then_journal_error_names_path(tmp_path: Path):
    path = tmp_path / "missing" / "j.sqlite"
    with pytest.raises(JournalError, match="missing"):
        Journal(path).open()


def test_open_when_already_open_elsewhere_then_in_use_error(tmp_path: Path):
    path = tmp_path / "j.sqlite"
    with Journal(path), pytest.raises(JournalError, match="in use by another process"):
        Journal(path).open()
    with Journal(path) as j:  # released on close
        assert j.writable()


def test_construct_when_bad_synchronous_then_input_error(tmp_path: Path):
    with pytest.raises(InputError, match="synchronous"):
        Journal(tmp_path / "j.sqlite", synchronous="off")  # type: ignore[arg-type]


def test_use_when_closed_then_journal_error_and_not_writable(tmp_path: Path):
    j = Journal(tmp_path / "j.sqlite")
    assert not j.writable()
    with pytest.raises(JournalError, match="not open"):
        j.record(kv={"a": "1"})
    j.open()
    j.close()
    j.close()
    with pytest.raises(JournalError, match="not open"):
        j.load_fills()


def test_construct_when_checkpoint_period_not_positive_then_input_error(tmp_path: Path):
    with pytest.raises(InputError, match="checkpoint_seconds"):
        Journal(tmp_path / "j.sqlite", checkpoint_seconds=0)


def test_background_checkpoint_when_enabled_then_wal_copied_into_database_and_stopped_on_close(
    tmp_path: Path,
):
    inline, background = tmp_path / "inline.sqlite", tmp_path / "background.sqlite"
    with Journal(inline, checkpoint_seconds=None) as j:
        j.record(signals=[signal()] * 20)
        assert inline.stat().st_size == 4096  # only the header: everything else is in the WAL
    with Journal(background, checkpoint_seconds=0.01) as j:
        j.record(signals=[signal()] * 20)
        deadline = time.monotonic() + 30
        while background.stat().st_size <= 4096 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert background.stat().st_size > 4096
    assert not [t for t in threading.enumerate() if t.name == f"wal-checkpoint:{background.name}"]
    with Journal(background) as j:
        assert j.counts()["signals"] == 20


def test_rows_when_unknown_table_then_input_error(journal: Journal):
    with pytest.raises(InputError, match="no table 'sqlite_master'"):
        journal.rows("sqlite_master")


# ---- round trips --------------------------------------------------------------------------------
def test_record_when_every_row_type_then_each_reads_back(journal: Journal):
    rejected = RejectedBar(symbol="BBB", ts=T0, reason="high_below_body", detail="h<c")
    change = StateChange(
        previous=TradingState.ACTIVE, current=TradingState.HALTED, reason="max_daily_loss", ts=T0
    )
    pos = Position(symbol="AAA", quantity=4.0, average_price=100.0, realized_pnl=-0.5)
    journal.record(
        bars_rejected=[rejected],
        signals=[signal("AAA"), signal("BBB")],
        decisions=[decision(True), decision(False)],
        orders=[order(1)],
        fills=[fill("F1")],
        positions=[pos],
        state_changes=[change],
        kv={"last_bar_ts": T0.isoformat()},
    )
    assert journal.load_fills() == [fill("F1")]
    assert journal.load_positions() == {"AAA": pos}
    assert journal.get("last_bar_ts") == T0.isoformat()
    assert journal.get("missing") is None
    loaded = journal.load_orders()["VT-1"]
    assert msgspec.structs.replace(loaded, filled_quantity=0.0, average_fill_price=0.0) == order(1)

    [bar_row] = journal.rows("bars_rejected")
    assert (bar_row["symbol"], bar_row["reason"]) == ("BBB", "high_below_body")
    assert bar_row["ts"] == "2024-03-01T14:30:00.000000+00:00"
    assert isinstance(bar_row["data"], str)  # JSON text, readable with sqlite3's json_extract
    assert msgspec.json.decode(bar_row["data"], type=RejectedBar) == rejected
    sig_rows = journal.rows("signals")
    assert [r["symbol"] for r in sig_rows] == ["AAA", "BBB"]
    assert msgspec.json.decode(sig_rows[0]["data"], type=Signal) == signal("AAA")
    dec_rows = journal.rows("decisions")
    assert [(r["accepted"], r["reason"]) for r in dec_rows] == [(1, "ok"), (0, "max_position")]
    assert msgspec.json.decode(dec_rows[1]["data"], type=RiskDecision) == decision(False)
    [state_row] = journal.rows("state_changes")
    assert (state_row["previous"], state_row["current"]) == ("active", "halted")
    assert msgspec.json.decode(state_row["data"], type=StateChange) == change


def test_record_when_naive_timestamp_then_stored_as_utc(journal: Journal):
    naive = Signal(
        symbol="AAA", ts=datetime(2024, 3, 1, 9, 0), p_up=0.6, confidence=0.2, scorer="rules"
    )
    journal.record(signals=[naive])
    assert journal.rows("signals")[0]["ts"] == "2024-03-01T09:00:00.000000+00:00"


def test_record_when_position_changes_then_upserted_by_symbol(journal: Journal):
    journal.record(positions=[Position(symbol="AAA", quantity=4.0, average_price=100.0)])
    journal.record(
        positions=[
            Position(symbol="AAA", quantity=0.0, realized_pnl=12.0),
            Position(symbol="BBB", quantity=-2.0, average_price=50.0),
        ]
    )
    positions = journal.load_positions()
    assert positions["AAA"] == Position(symbol="AAA", quantity=0.0, realized_pnl=12.0)
    assert positions["BBB"].quantity == -2.0
    assert journal.counts()["positions"] == 2


def test_record_when_kv_rewritten_then_last_value_wins(journal: Journal):
    journal.record(kv={"cash": "100.0", "peak_equity": "100.0"})
    journal.record(kv={"cash": "90.5"})
    assert (journal.get("cash"), journal.get("peak_equity")) == ("90.5", "100.0")


def test_record_daily_pnl_when_same_day_twice_then_last_write_wins(journal: Journal):
    day = date(2024, 3, 1)
    journal.record_daily_pnl(day=day, equity=100.0, realized=1.0, unrealized=2.0, ts=T0)
    journal.record_daily_pnl(
        day=day, equity=103.0, realized=3.0, unrealized=0.0, ts=T0 + timedelta(hours=1)
    )
    journal.record_daily_pnl(
        day=date(2024, 3, 4), equity=99.0, realized=0.0, unrealized=-4.0, ts=T0 + timedelta(days=3)
    )
    rows = journal.rows("daily_pnl")
    assert [(r["day"], r["equity"]) for r in rows] == [("2024-03-01", 103.0), ("2024-03-04", 99.0)]


def test_record_when_nothing_given_then_no_transaction_and_nothing_written(journal: Journal):
    journal.record()
    assert sum(journal.counts().values()) == 0


# ---- orders, events and fills -------------------------------------------------------------------
def test_record_when_fill_repeated_then_stored_once_and_order_counted_once(journal: Journal):
    journal.record(orders=[order(1)])
    journal.record(fills=[fill("F1")])
    journal.record(fills=[fill("F1"), fill("F2", qty=6.0, price=110.0)])
    journal.record(fills=[fill("F1")])
    assert [f.fill_id for f in journal.load_fills()] == ["F1", "F2"]
    assert journal.fill_ids() == {"F1", "F2"}
    o = journal.load_orders()["VT-1"]
    assert o.filled_quantity == 10.0
    assert o.average_fill_price == pytest.approx((4 * 100.0 + 6 * 110.0) / 10)


def test_record_when_events_arrive_then_order_status_follows_and_events_append(journal: Journal):
    journal.record(orders=[order(1), order(2)])
    journal.record(order_events=[event("VT-1", OrderStatus.SUBMITTED, broker_order_id="B7")])
    journal.record(order_events=[event("VT-1", OrderStatus.PARTIALLY_FILLED, 4.0)])
    orders = journal.load_orders()
    assert orders["VT-1"].status is OrderStatus.PARTIALLY_FILLED
    assert orders["VT-1"].filled_quantity == 4.0
    assert orders["VT-1"].broker_order_id == "B7"
    assert orders["VT-2"].status is OrderStatus.PENDING_SUBMIT
    assert list(journal.load_orders(open_only=True)) == ["VT-1", "VT-2"]

    journal.record(
        order_events=[
            event("VT-1", OrderStatus.PARTIALLY_FILLED, 10.0),
            event("VT-2", OrderStatus.CANCELLED, reason="user"),
        ]
    )
    orders = journal.load_orders()
    assert orders["VT-1"].status is OrderStatus.FILLED  # partial that covers the order is a fill
    assert (orders["VT-2"].status, orders["VT-2"].reason) == (OrderStatus.CANCELLED, "user")
    assert journal.load_orders(open_only=True) == {}
    assert [r["status"] for r in journal.rows("order_events")] == [
        "submitted",
        "partially_filled",
        "partially_filled",
        "cancelled",
    ]


def test_record_when_event_after_terminal_status_then_order_stays_terminal(journal: Journal):
    journal.record(orders=[order(1)], order_events=[event("VT-1", OrderStatus.REJECTED)])
    journal.record(order_events=[event("VT-1", OrderStatus.SUBMITTED)])
    assert journal.load_orders()["VT-1"].status is OrderStatus.REJECTED
    assert journal.counts()["order_events"] == 2


def test_order_status_update_when_run_then_terminal_filter_builds_no_temporary_btree(
    journal: Journal,
) -> None:
    # The update runs once per order event on the order path: a `NOT IN (...)` list here had
    # SQLite build an ephemeral b-tree every run, twice the cost of a plain update of the row.
    journal.record(orders=[order(1)])
    params = {"coid": "VT-1", "ts": "t", "status": "filled", "filled": 10.0,
              "broker_order_id": None, "reason": ""}  # fmt: skip
    with sqlite3.connect(journal.path) as con:
        program = [op[1] for op in con.execute(f"EXPLAIN {ORDER_STATUS}", params)]
        plan = con.execute(f"EXPLAIN QUERY PLAN {ORDER_STATUS}", params).fetchall()
    assert "OpenEphemeral" not in program
    assert "USING INDEX" in plan[0][3]  # one row found by its client order id, not a scan


def test_record_when_event_for_unknown_order_then_event_kept_and_no_order_made(journal: Journal):
    journal.record(order_events=[event("XX-9", OrderStatus.CANCELLED)])
    assert journal.load_orders() == {}
    assert journal.rows("order_events")[0]["client_order_id"] == "XX-9"


def test_record_when_order_recorded_again_then_upserted(journal: Journal):
    journal.record(orders=[order(1)])
    journal.record(orders=[msgspec.structs.replace(order(1), status=OrderStatus.ACCEPTED)])
    assert journal.counts()["orders"] == 1
    assert journal.load_orders()["VT-1"].status is OrderStatus.ACCEPTED


_step = st.one_of(
    st.tuples(st.just("fill"), st.integers(1, 3), st.integers(0, 3)),
    st.tuples(st.just("event"), st.integers(1, 3), st.sampled_from(list(OrderStatus)),
              st.integers(0, 12)),
)  # fmt: skip


class OrderModel:
    """The order rules the journal follows, in plain Python (Book's rules, terminal is final)."""

    def __init__(self, o: Order) -> None:
        self.quantity = o.quantity
        self.status = o.status
        self.filled = 0.0
        self.fills: dict[str, Fill] = {}

    def fill(self, f: Fill) -> None:
        if f.fill_id not in self.fills:
            self.fills[f.fill_id] = f
            self.filled += f.quantity

    def event(self, e: OrderEvent) -> None:
        if self.status.is_terminal:
            return
        self.filled = max(self.filled, e.filled_quantity)
        partial_done = e.status is OrderStatus.PARTIALLY_FILLED and self.filled >= self.quantity
        self.status = OrderStatus.FILLED if partial_done else e.status

    @property
    def average_price(self) -> float:
        fills = self.fills.values()
        qty = sum(f.quantity for f in fills)
        return sum(f.quantity * f.price for f in fills) / qty if qty else 0.0


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.lists(_step, max_size=4), max_size=8))
def test_record_when_fills_and_events_in_any_order_then_orders_follow_model(steps):
    """Status, filled quantity and VWAP of every order match the model, repeated fills included."""
    orders = [order(n) for n in (1, 2, 3)]
    model = {o.client_order_id: OrderModel(o) for o in orders}
    with tempfile.TemporaryDirectory() as tmp, Journal(Path(tmp) / "j.sqlite") as j:
        j.record(orders=orders)
        for batch in steps:
            fills, events = [], []
            for step in batch:
                if step[0] == "fill":
                    _, n, k = step  # one execution per id: a repeat is the same one reported again
                    fills.append(fill(f"F{n}-{k}", f"VT-{n}", qty=k + 1.0, price=99.0 + k))
                else:
                    _, n, status, filled = step
                    events.append(event(f"VT-{n}", status, float(filled)))
            for f in fills:
                model[f.client_order_id].fill(f)
            for e in events:
                model[e.client_order_id].event(e)
            j.record(fills=fills, order_events=events)  # repeats included: the journal drops them
        journaled = j.load_orders()
        for coid, m in model.items():
            got = journaled[coid]
            assert (got.status, got.filled_quantity) == (m.status, pytest.approx(m.filled))
            assert got.average_fill_price == pytest.approx(m.average_price)
        expected_open = [c for c, m in model.items() if not m.status.is_terminal]
        assert list(j.load_orders(open_only=True)) == expected_open
        assert j.fill_ids() == {f for m in model.values() for f in m.fills}


# ---- one transaction per batch ------------------------------------------------------------------
def test_record_when_one_row_violates_constraint_then_nothing_of_batch_written(journal: Journal):
    journal.record(kv={"cash": "100"})
    bad = fill("F-bad", qty=-1.0)  # violates CHECK (quantity > 0), after rows of other tables
    with pytest.raises(
        JournalError, match="record failed at fills: CHECK constraint failed"
    ) as info:
        journal.record(
            signals=[signal()] * 10,
            decisions=[decision()],
            orders=[order(1)],
            fills=[fill("F1"), bad],
            kv={"cash": "50"},
        )
    assert "\n" not in str(info.value)
    counts = journal.counts()
    assert counts["signals"] == counts["orders"] == counts["fills"] == counts["decisions"] == 0
    assert journal.get("cash") == "100"
    assert not journal.writable()
    assert journal.last_error is not None
    journal.record(kv={"cash": "60"})  # a later good batch commits and clears the failure
    assert journal.writable()
    assert journal.get("cash") == "60"


def _committed_signals(path: Path) -> int:
    """Signals another connection sees: what has been committed."""
    with sqlite3.connect(path) as con:
        return int(con.execute("SELECT COUNT(*) FROM signals").fetchone()[0])


def test_record_when_commits_grouped_then_visible_to_others_every_n_and_on_flush_and_close(
    tmp_path: Path,
):
    path = tmp_path / "j.sqlite"
    journal = Journal(path, commit_every=3)
    journal.open()
    for minute in range(4):
        journal.record(signals=[signal(minute=minute)])
    assert _committed_signals(path) == 3  # the first group of three, not the fourth
    assert journal.counts()["signals"] == 4  # the writer sees its own open group
    journal.flush()
    assert _committed_signals(path) == 4
    journal.record(signals=[signal(minute=9)])
    journal.close()
    assert _committed_signals(path) == 5


def test_record_when_grouped_write_fails_then_whole_open_group_rolled_back_and_error_raised(
    tmp_path: Path,
):
    with Journal(tmp_path / "j.sqlite", commit_every=10) as journal:
        journal.record(signals=[signal(minute=1)])
        with pytest.raises(JournalError, match="record failed at fills"):
            journal.record(orders=[order(1)], fills=[fill("F-bad", qty=-1.0)])
        assert journal.counts()["signals"] == 0  # the group it was in went with it
        journal.record(signals=[signal(minute=2)])
        journal.flush()
        assert journal.counts()["signals"] == 1


def test_construct_when_commit_every_below_one_then_input_error(tmp_path: Path):
    with pytest.raises(InputError, match="commit_every"):
        Journal(tmp_path / "j.sqlite", commit_every=0)


def test_record_when_non_finite_number_then_refused_before_writing(journal: Journal):
    with pytest.raises(JournalError, match="non-finite"):
        journal.record(signals=[signal()], fills=[fill("F1", price=float("nan"))])
    with pytest.raises(JournalError, match="non-finite"):
        journal.record(positions=[Position(symbol="AAA", quantity=float("inf"))])
    assert sum(journal.counts().values()) == 0


def test_record_when_database_becomes_read_only_then_journal_error_not_writable(tmp_path: Path):
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        j.record(kv={"a": "1"})
        j._con.execute("PRAGMA query_only = ON")  # type: ignore[union-attr]
        with pytest.raises(
            JournalError,
            match=r"record failed at begin: read-only: .*\(attempt to write a readonly database\)",
        ):
            j.record(signals=[signal()], kv={"a": "2"})
        assert not j.writable()
    with Journal(path) as j:
        assert (j.get("a"), j.counts()["signals"]) == ("1", 0)


# ---- order sequence -----------------------------------------------------------------------------
def test_next_order_sequence_when_reopened_then_continues_past_journaled_orders(tmp_path: Path):
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        seqs = [j.next_order_sequence() for _ in range(3)]
        j.record(orders=[order(s) for s in seqs])
    assert seqs == [1, 2, 3]
    with Journal(path) as j:
        assert j.next_order_sequence() == 4


def test_next_order_sequence_when_numbers_issued_beyond_last_order_then_never_reused(
    tmp_path: Path,
):
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        first = j.next_order_sequence()
        j.next_order_sequence()  # handed out, order never journaled
        third = j.next_order_sequence()
        j.record(orders=[order(first)])
    with Journal(path) as j:
        assert j.next_order_sequence() > third


def test_next_order_sequence_when_order_journaled_with_higher_number_then_skips_past(
    journal: Journal,
):
    journal.record(orders=[order(41, prefix="EXT"), order(1, prefix="ib-ext-x")])
    assert journal.next_order_sequence() == 42


# ---- crash safety -------------------------------------------------------------------------------
_CRASHER = textwrap.dedent(
    """
    import os, sys
    from datetime import UTC, datetime
    from daemon.journal import Journal
    from strategy.types import Order, OrderType, Side, Signal

    j = Journal(sys.argv[1], synchronous=sys.argv[2])
    j.open()
    ts = datetime(2024, 3, 1, tzinfo=UTC)
    for i in range(5):
        n = j.next_order_sequence()
        j.record(
            signals=[Signal(symbol="AAA", ts=ts, p_up=0.7, confidence=0.5, scorer="rules")],
            orders=[Order(client_order_id=f"VT-{n}", symbol="AAA", side=Side.BUY, quantity=1.0,
                          order_type=OrderType.MARKET, created_ts=ts)],
            kv={"last": str(n)},
        )
    # Mid-way through the next batch: a transaction is open and half written when we die.
    cur = j._con.cursor()
    cur.execute("BEGIN IMMEDIATE")
    cur.execute("INSERT INTO kv (key, value) VALUES ('uncommitted', 'x')")
    os._exit(0)
    """
)


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_reopen_when_writer_died_mid_batch_then_committed_data_kept(
    tmp_path: Path, synchronous: str
):
    path = tmp_path / "j.sqlite"
    subprocess.run(
        [sys.executable, "-c", _CRASHER, str(path), synchronous], cwd=REPO, check=True, timeout=60
    )
    assert (tmp_path / "j.sqlite-wal").exists()  # never closed, never checkpointed
    with Journal(path) as j:
        assert list(j.load_orders(open_only=True)) == [f"VT-{n}" for n in range(1, 6)]
        assert j.counts()["signals"] == 5
        assert j.get("last") == "5"
        assert j.get("uncommitted") is None
        assert j.next_order_sequence() == 6


def test_open_when_v1_journal_then_migrated_and_hot_path_indexes_dropped(tmp_path: Path) -> None:
    from daemon.journal import MIGRATIONS

    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript(str(MIGRATIONS[0]))
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()
    with Journal(path, checkpoint_seconds=None) as journal:
        assert journal.schema_version() == SCHEMA_VERSION >= 2
    con = sqlite3.connect(path)
    indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    con.close()
    # V2 dropped the indexes no hot-path read uses, V3 the two by client order id no reader uses:
    # what is left are the unique keys the upserts need.
    assert indexes == {"sqlite_autoindex_fills_1", "sqlite_autoindex_orders_1"}
