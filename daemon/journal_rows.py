"""One batch as journal rows: encoded on whichever thread writes it, then written in one transaction."""

from __future__ import annotations

import functools
import math
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypedDict, cast

import msgspec

from daemon.journal_schema import (
    INSERT_DECISION,
    INSERT_EVENT,
    INSERT_FILL,
    INSERT_REJECTED,
    INSERT_SIGNAL_BLOCK,
    INSERT_STATE,
    ORDER_FILLED,
    ORDER_FILLED_THEN_STATUS,
    ORDER_STATUS,
    TERMINAL,
    UPSERT_KV,
    UPSERT_ORDER,
    UPSERT_PNL,
    UPSERT_POSITION,
    JournalError,
)
from strategy.types import Fill, Order, OrderEvent, Position, RiskDecision, Signal


@dataclass(slots=True)
class BatchRows:
    """One batch's rows, ready for executemany; fills still include repeats until dedupe."""

    rejected: list[tuple[Any, ...]] = field(default_factory=list)
    signals: list[tuple[str]] = field(default_factory=list)  # one signal_blocks row at most
    decisions: list[tuple[Any, ...]] = field(default_factory=list)
    orders: list[tuple[Any, ...]] = field(default_factory=list)
    fills: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    positions: list[tuple[Any, ...]] = field(default_factory=list)
    states: list[tuple[Any, ...]] = field(default_factory=list)
    kv: list[tuple[str, str]] = field(default_factory=list)
    daily_pnl: list[tuple[Any, ...]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any((self.rejected, self.signals, self.decisions, self.orders, self.fills,
                    self.events, self.positions, self.states, self.kv, self.daily_pnl))  # fmt: skip

    def max_sequence(self) -> int | None:
        """The highest client order number among the orders, if any carries one."""
        return max((r[1] for r in self.orders if r[1] is not None), default=None)


class BatchArgs(TypedDict, total=False):
    """One batch's values by table: the keyword arguments of Journal.record and
    Journal.record_orders_ahead (strategy.kernel.TradingKernel.journal_rows builds them)."""

    bars_rejected: Iterable[msgspec.Struct]
    signals: Iterable[Signal]
    decisions: Iterable[RiskDecision]
    orders: Iterable[Order]
    order_events: Iterable[OrderEvent]
    fills: Iterable[Fill]
    positions: Iterable[Position]
    state_changes: Iterable[msgspec.Struct]
    kv: Mapping[str, str | datetime] | None  # a datetime is stored as its isoformat()


BATCH_KEYS = frozenset(BatchArgs.__annotations__)


def check_batch_keys(path: Path, batch: Mapping[str, object]) -> None:
    """TypeError naming any keyword that is not a journal table (see BatchArgs)."""
    if BATCH_KEYS.issuperset(batch):
        return
    unknown = set(batch) - BATCH_KEYS
    if unknown:
        msg = f"journal {path}: no table for {', '.join(sorted(unknown))}"
        raise TypeError(msg)


def encode_batch(path: Path, batch: BatchArgs) -> BatchRows:
    """Encode one batch (msgspec JSON in `data`, key columns beside it); a non-finite number in
    an order, fill or position refuses the batch with JournalError. Only the tables the batch
    holds rows for are visited (an order commit: orders and kv; a group: a few tables)."""
    check_batch_keys(path, batch)
    encode = _ENCODER.encode

    def enc(value: msgspec.Struct) -> str:
        return encode(value).decode()

    rows = BatchRows()
    values: Any
    for table, values in cast("dict[str, Any]", batch).items():
        if not values:
            continue
        if table == "signals":
            rows.signals = _signal_block(values)
        elif table == "orders":
            rows.orders = [order_row(o, enc(o)) for o in values]
            for o in rows.orders:
                check_finite(path, "orders", o[0], (o[5], o[6], o[8], o[9]))
        elif table == "kv":
            rows.kv = [(str(k), kv_text(v)) for k, v in values.items()]
        elif table == "fills":
            rows.fills = [fill_row(f, enc(f)) for f in values]
            for f in rows.fills:
                check_finite(path, "fills", f["fill_id"], (f["qty"], f["price"], f["commission"]))
        elif table == "order_events":
            rows.events = [event_row(e, enc(e)) for e in values]
        elif table == "decisions":
            rows.decisions = [
                (d.intent.symbol, iso_utc(d.ts or d.intent.ts), int(d.accepted), d.reason, enc(d))
                for d in values
            ]
        elif table == "positions":
            rows.positions = [
                (p.symbol, p.quantity, p.average_price, p.realized_pnl, enc(p)) for p in values
            ]
            for p in rows.positions:
                check_finite(path, "positions", p[0], p[1:4])
        elif table == "bars_rejected":
            rows.rejected = [
                (_attr(b, "symbol"), iso_utc(_attr(b, "ts")), text_or_none(_attr(b, "reason")),
                 enc(b))
                for b in values
            ]  # fmt: skip
        else:  # state_changes (check_batch_keys refused any other name)
            rows.states = [
                (
                    iso_utc(_attr(c, "ts")),
                    text_or_none(_attr(c, "previous")),
                    text_or_none(_attr(c, "current")),
                    text_or_none(_attr(c, "reason")),
                    enc(c),
                )
                for c in values
            ]
    return rows


def kv_text(value: object) -> str:
    """A kv value as stored: a datetime as its isoformat() (made only for the value a commit
    keeps: the group writer keeps each key's last), anything else as str()."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


def daily_pnl_row(
    *, day: date, equity: float, realized: float, unrealized: float, ts: datetime
) -> tuple[Any, ...]:
    return (day.isoformat(), equity, realized, unrealized, iso_utc(ts))


# write_batch's statements in order: (table, ((sql, BatchRows field), ...)).
_STEPS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("bars_rejected", ((INSERT_REJECTED, "rejected"),)),
    ("signals", ((INSERT_SIGNAL_BLOCK, "signals"),)),
    ("decisions", ((INSERT_DECISION, "decisions"),)),
    ("orders", ((UPSERT_ORDER, "orders"),)),
    ("fills", ((INSERT_FILL, "fills"), (ORDER_FILLED, "fills"))),
    ("order_events", ((INSERT_EVENT, "events"), (ORDER_STATUS, "events"))),
    ("positions", ((UPSERT_POSITION, "positions"),)),
    ("state_changes", ((INSERT_STATE, "states"),)),
    ("kv", ((UPSERT_KV, "kv"),)),
    ("daily_pnl", ((UPSERT_PNL, "daily_pnl"),)),
)


def write_batch(cur: sqlite3.Cursor, stage: Callable[[str], None], rows: BatchRows) -> None:
    """Run one batch's statements inside the caller's transaction; `stage` names the table for
    the error message. Fills must be new (deduplicated by the caller)."""
    for table, statements in _STEPS:
        for sql, field_name in statements:
            params = getattr(rows, field_name)
            if params:  # most tables get no row in most batches
                stage(table)
                cur.executemany(sql, params)


# The tables whose rows only append (or upsert by key, the last one winning): a group's rows of
# each go in one executemany, in batch order, which gives the same rows and ids as batch by batch
# (signals: one block row for the group, which the `signals` view unpacks into the same rows).
# Fills and order events also append (their own tables, in batch order), but each also updates
# its order's row, and those updates stay in batch order per order (see write_group).
MERGED_TABLES = (
    "bars_rejected", "signals", "decisions", "fills", "order_events", "positions", "state_changes",
)  # fmt: skip


def write_group(
    path: Path,
    cur: sqlite3.Cursor,
    stage: Callable[[str], None],
    batches: Sequence[BatchArgs],
    kv: Sequence[tuple[str, str]],
) -> None:
    """Write queued batches (no orders among them) in the caller's transaction, with the rows
    write_batch(encode_batch(b)) gives for each batch in turn, in far fewer statements: one
    encode and one insert per table, the orders' updates in as few runs as keep each order's
    updates in batch order (update_runs), and kv as given (the caller keeps one value per key,
    the last). Raises JournalError for a non-finite number, like encode_batch, before the first
    statement."""
    stage("encode")
    merged: dict[str, list[Any]] = {table: [] for table in MERGED_TABLES}
    bounds: list[tuple[int, int]] = []  # per batch with fills or events: its ends in each list
    fills, events = merged["fills"], merged["order_events"]
    for batch in batches:
        # A queued batch holds only its tables with rows (a signal block and the kv, mostly):
        # walking its items costs less than asking it for each table.
        for table, values in batch.items():
            rows_of_table = merged.get(table)
            if rows_of_table is not None:
                rows_of_table.extend(values)  # type: ignore[arg-type]
        if "fills" in batch or "order_events" in batch:
            bounds.append((len(fills), len(events)))
    rows = encode_batch(path, cast("BatchArgs", {k: v for k, v in merged.items() if v}))
    for table, sql, params in (
        ("bars_rejected", INSERT_REJECTED, rows.rejected),
        ("signals", INSERT_SIGNAL_BLOCK, rows.signals),
        ("decisions", INSERT_DECISION, rows.decisions),
        ("fills", INSERT_FILL, rows.fills),
        ("order_events", INSERT_EVENT, rows.events),
    ):
        if params:
            stage(table)
            cur.executemany(sql, params)
    for run_fills, run_status in update_runs(rows.fills, rows.events, bounds):
        filled, status, both = fill_then_status(run_fills, run_status)
        if filled:
            stage("fills")
            cur.executemany(ORDER_FILLED, filled)
        if status:
            stage("order_events")
            cur.executemany(ORDER_STATUS, status)
        if both:
            stage("fills")
            cur.executemany(ORDER_FILLED_THEN_STATUS, both)
    rows.rejected, rows.signals, rows.decisions, rows.fills, rows.events = [], [], [], [], []
    rows.kv = list(kv)
    if len(rows.positions) > 1:
        # An upsert by symbol: the group's last row of each symbol is the one that stays (every
        # row was checked finite above); a symbol traded every few bars had one per fill.
        rows.positions = list({p[0]: p for p in rows.positions}.values())
    write_batch(cur, stage, rows)  # positions, state changes, kv


def update_runs(
    fills: list[dict[str, Any]], events: list[dict[str, Any]], bounds: Sequence[tuple[int, int]]
) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """The orders' updates of a group's fills and events (bounds: where each batch's end in
    either list) as runs of (fills, events): each run's fill updates, then its status updates.
    Batch by batch, a batch's fills update their orders before its events. A run ends before a
    batch with a fill of an order that has an event in the run, so each order's updates keep
    their batch order; updates of different orders touch different rows, in any order. An
    order's status updates within a run are folded where that gives the same row
    (folded_status)."""
    runs: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
    run_fills: list[dict[str, Any]] = []
    run_events: list[dict[str, Any]] = []
    evented: set[str] = set()
    f0 = e0 = 0
    for f1, e1 in bounds:
        batch_fills = fills[f0:f1]
        if evented and any(f["coid"] in evented for f in batch_fills):
            runs.append((run_fills, folded_status(run_events)))
            run_fills, run_events, evented = [], [], set()
        run_fills += batch_fills
        for e in events[e0:e1]:
            run_events.append(e)
            evented.add(e["coid"])
        f0, e0 = f1, e1
    if run_fills or run_events:
        runs.append((run_fills, folded_status(run_events)))
    return runs


# An event with one of these statuses may end its order's updates (a terminal status, or a partial
# fill that reaches the quantity: ORDER_STATUS makes it filled), so no later event folds into it.
_FOLD_STOPS = frozenset((*TERMINAL, "partially_filled"))


def folded_status(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ORDER_STATUS's parameters for a run's events, an order's consecutive events folded into
    one update where that leaves the same row: an event e2 after e1 of the same order, e1 neither
    terminal nor a partial fill, is one update with e2's status, time and the later of each
    value as the two updates would have left it (filled: the larger; broker order id and reason:
    e2's unless it has none). Order events are the broker's acknowledgements and fills, two per
    order at least (accepted, then filled): folding halves the journal's order-row updates."""
    out: list[dict[str, Any]] = []
    at: dict[str, int] = {}  # an order's last update in out
    for e in events:
        coid = e["coid"]
        i = at.get(coid)
        if i is None or out[i]["status"] in _FOLD_STOPS:
            at[coid] = len(out)
            out.append(e)
            continue
        before = out[i]
        out[i] = {
            "coid": coid,
            "ts": e["ts"],
            "status": e["status"],
            "filled": max(before["filled"], e["filled"]),
            "broker_order_id": (
                e["broker_order_id"] if e["broker_order_id"] is not None
                else before["broker_order_id"]
            ),
            "reason": e["reason"] if e["reason"] != "" else before["reason"],
        }  # fmt: skip
    return out


def fill_then_status(
    fills: list[dict[str, Any]], status: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """A run's updates as ORDER_FILLED's, ORDER_STATUS's and ORDER_FILLED_THEN_STATUS's
    parameters: an order with one fill and one status update in the run gets one statement
    (the fill's ts as fill_ts); the others keep theirs. Each order's updates are in one list,
    so the three run in any order."""
    if not fills or not status:
        return fills, status, []
    fills_of = Counter(f["coid"] for f in fills)
    status_of: dict[str, dict[str, Any] | None] = {}
    for e in status:  # None: more than one update (a fold stopped)
        coid = e["coid"]
        if fills_of.get(coid) == 1:
            status_of[coid] = e if coid not in status_of else None
    if not status_of:
        return fills, status, []
    alone: list[dict[str, Any]] = []
    both: list[dict[str, Any]] = []
    for f in fills:
        one = status_of.get(f["coid"])
        if one is None:
            alone.append(f)
        else:
            both.append({
                "coid": f["coid"], "qty": f["qty"], "price": f["price"], "fill_ts": f["ts"],
                "ts": one["ts"], "status": one["status"], "filled": one["filled"],
                "broker_order_id": one["broker_order_id"], "reason": one["reason"],
            })  # fmt: skip
    if not both:
        return fills, status, []
    rest = [e for e in status if status_of.get(e["coid"]) is None]
    return alone, rest, both


_ENCODER = msgspec.json.Encoder()


def _signal_block(signals: Iterable[Signal]) -> list[tuple[str]]:
    """All of a write's signals as one signal_blocks row (journal_schema V3), or none: a JSON
    array encoded in one call, instead of a row, a timestamp string and an encode per signal."""
    values = signals if isinstance(signals, list | tuple) else list(signals)
    return [(_ENCODER.encode(values).decode(),)] if values else []


def order_row(o: Order, data: str) -> tuple[Any, ...]:
    """UPSERT_ORDER's parameters for an order whose JSON text is `data`."""
    ts = iso_utc(o.created_ts)
    return (
        o.client_order_id,
        _sequence_of(o.client_order_id),
        o.symbol,
        str(o.side),
        str(o.order_type),
        o.quantity,
        o.limit_price,
        str(o.status),
        o.filled_quantity,
        o.average_fill_price,
        o.reason,
        o.broker_order_id,
        ts,
        ts,
        data,
    )


def fill_row(f: Fill, data: str) -> dict[str, Any]:
    """INSERT_FILL's (and ORDER_FILLED's) named parameters for a fill whose JSON text is `data`."""
    return {
        "fill_id": f.fill_id, "coid": f.client_order_id, "symbol": f.symbol, "side": str(f.side),
        "qty": f.quantity, "price": f.price, "commission": f.commission, "ts": iso_utc(f.ts),
        "data": data,
    }  # fmt: skip


def event_row(e: OrderEvent, data: str) -> dict[str, Any]:
    """INSERT_EVENT's (and ORDER_STATUS's) named parameters for an event whose JSON text is `data`."""
    return {
        "coid": e.client_order_id, "ts": iso_utc(e.ts), "status": str(e.status),
        "filled": e.filled_quantity, "broker_order_id": e.broker_order_id, "reason": e.reason,
        "data": data,
    }  # fmt: skip


def _sequence_of(client_order_id: str) -> int | None:
    """The number after the last '-' of a client order id ('PAPER-42' -> 42), if any."""
    if "-" not in client_order_id:
        return None
    tail = client_order_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() and len(tail) < 18 else None


def _attr(value: object, name: str) -> Any:
    return getattr(value, name, None)


def text_or_none(value: object) -> str | None:
    """str(value), with None kept as NULL."""
    return None if value is None else str(value)


def iso_utc(ts: object) -> str | None:
    """UTC ISO 8601 with microseconds (sorts as text); a naive datetime is taken as UTC."""
    if ts is None:
        return None
    if isinstance(ts, datetime):
        return _iso_datetime(ts)
    if isinstance(ts, date):
        return ts.isoformat()
    return str(ts)


@functools.lru_cache(maxsize=4096)
def _iso_datetime(ts: datetime) -> str:
    """Cached: a bar batch's rows share a handful of timestamps (equal instants give one string)."""
    aware = ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="microseconds")


def check_finite(path: Path, table: str, key: str, values: Iterable[float | None]) -> None:
    """NaN/inf would be stored as NULL in JSON and could not be read back: refuse the batch."""
    for v in values:  # a loop: a generator in all() cost more than the check, per order
        if v is not None and not math.isfinite(v):
            msg = f"journal {path}: refusing {table} row {key!r} with a non-finite number"
            raise JournalError(msg)
