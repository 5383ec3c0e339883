"""The paper venue: a SimBroker behind the ExecutionClient protocol, persisted like a remote broker.

The venue keeps its own SQLite file (WAL), separate from the journal, so that it survives a
daemon crash the way a real broker would: every submit, cancel and batch of bars is committed
before the call returns, writing only the orders that changed, the new fills and the symbols'
last bars. Those changes go in as one row of venue_log (one insert, one B-tree: a third of the
cost of upserting them into the three tables, whose rows and indexes it touched on the order
path twice a batch); the background checkpoint's pass (every second, off the order path), opening
and closing the venue fold the log into venue_orders, venue_fills and venue_tapes. On
construction it restores itself from the tables and the log. A client order id it already knows
is never ordered a second time; the caller gets the order's current status instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import msgspec
import structlog

from daemon.errors import InvariantError, StorageError
from daemon.execution.base import BrokerUpdates, BrokerView
from daemon.journal import storage_cause
from daemon.wal_checkpoint import BACKSTOP_PAGES, WalCheckpointer
from strategy.sim_broker import (
    DUPLICATE_CLIENT_ORDER_ID,
    SimBroker,
    SimBrokerConfig,
    SimBrokerState,
    SymbolTape,
    VenueOrder,
)
from strategy.types import Bar, Fill, Order, OrderEvent

log = structlog.get_logger("daemon.execution.paper")

# Crash-test failpoint: kill -9 ourselves once the venue has committed its Nth fill, before the
# daemon's journal has seen it (reconcile on restart must recover it exactly once).
_CRASH_AFTER_VENUE_FILLS = int(os.environ.get("VLMTRADER_CRASH_AFTER_VENUE_FILLS", "0") or 0)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS venue_orders (
    client_order_id TEXT PRIMARY KEY, sequence INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS venue_fills (
    id INTEGER PRIMARY KEY, fill_id TEXT NOT NULL UNIQUE, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS venue_tapes (symbol TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS venue_log (id INTEGER PRIMARY KEY, data BLOB NOT NULL);
"""
_UPSERT_ORDER = (
    "INSERT INTO venue_orders (client_order_id, sequence, data) VALUES (?, ?, ?) "
    "ON CONFLICT (client_order_id) DO UPDATE SET data = excluded.data"
)
_INSERT_FILL = "INSERT OR IGNORE INTO venue_fills (fill_id, data) VALUES (?, ?)"
_UPSERT_TAPE = (
    "INSERT INTO venue_tapes (symbol, data) VALUES (?, ?) "
    "ON CONFLICT (symbol) DO UPDATE SET data = excluded.data"
)
_APPEND_CHANGES = "INSERT INTO venue_log (data) VALUES (?)"
# Always the oldest rows left: a folded chunk is deleted in the transaction that applies it. (Not
# "after the last id folded": venue_log's ids are rowids, which start again at 1 once the table is
# empty, so a row logged after a chunk emptied it would sort below that id.)
_READ_LOG = "SELECT id, data FROM venue_log ORDER BY id LIMIT ?"
_DELETE_LOG = "DELETE FROM venue_log WHERE id <= ?"
# Log rows folded per transaction (see PaperExecution._fold_log): a second of a 100-symbol
# replay's calls is a few chunks; a live minute bar's, one.
FOLD_CHUNK = 8


class VenueChanges(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One committed call's changes (a venue_log row): the orders it changed, its new fills and
    the tapes of the symbols it touched."""

    orders: tuple[VenueOrder, ...] = ()
    fills: tuple[Fill, ...] = ()
    tapes: dict[str, SymbolTape] = msgspec.field(default_factory=dict)


_CHANGES = msgspec.json.Decoder(VenueChanges)


VENUE_CHECKPOINT_SECONDS = 1.0  # background WAL checkpoint period (see daemon.wal_checkpoint)


class PaperExecution:
    """ExecutionClient for paper-sim mode: submits to a SimBroker whose state lives in `path`."""

    def __init__(self, *, config: SimBrokerConfig, path: Path) -> None:
        self.path = Path(path)
        self.config = config
        self._encode = msgspec.json.Encoder().encode
        self._events: list[OrderEvent] = []
        self._fills: list[Fill] = []
        self._con: sqlite3.Connection | None = None
        self._fills_saved = 0
        self._checkpointer: WalCheckpointer | None = None
        # Held around each commit: the checkpoint thread's WAL restart waits for it rather than
        # make a commit wait in SQLite's busy handler.
        self._write_lock = threading.Lock()
        self._con = self._connect()
        self.broker = self._load(self._con)
        self._checkpointer = WalCheckpointer(
            self.path,
            VENUE_CHECKPOINT_SECONDS,
            event="venue.checkpoint_failed",
            write_lock=self._write_lock,
            chores=self._fold_or_log,
        )
        self._checkpointer.start()
        self._clock = max((t.bar.ts for t in self.broker.state().tapes.values()), default=None)
        log.info("venue.restored", path=str(self.path), orders=len(self.broker.orders()),
                 open_orders=len(self.broker.open_orders()), fills=len(self.broker.fills()))  # fmt: skip

    # ---- ExecutionClient ------------------------------------------------------------------------
    async def submit(self, orders: Sequence[Order]) -> None:
        """Hand orders to the venue; a known client order id reports its current state instead."""
        events: list[OrderEvent] = []
        fills: list[Fill] = []
        for order in orders:
            known = self.broker.order(order.client_order_id)
            if known is not None:
                log.warning("order.duplicate_ignored", client_order_id=order.client_order_id,
                            status=str(known.status), filled_quantity=known.filled_quantity)  # fmt: skip
                events.append(
                    OrderEvent(
                        client_order_id=known.client_order_id,
                        ts=self._now(order.created_ts),
                        status=known.status,
                        filled_quantity=known.filled_quantity,
                        reason=DUPLICATE_CLIENT_ORDER_ID,
                        broker_order_id=known.broker_order_id,
                    )
                )
                continue
            events.extend(self.broker.submit(order, self._now(order.created_ts)))
            more_events, more_fills = self.broker.flush()
            if more_events:
                events.extend(more_events)
            if more_fills:
                fills.extend(more_fills)
        self._persist(events, fills, ())

    async def cancel(self, client_order_id: str) -> None:
        self._persist(self.broker.cancel(client_order_id, self._now()), (), ())

    def on_market_bars(self, bars: Sequence[Bar]) -> None:
        """Match working orders against a batch of bars; committed before returning."""
        matched = self.broker.on_bars(bars)  # one pass over the batch (strategy/sim_broker.py)
        events, fills, latest = matched.events, matched.fills, matched.latest
        if latest is not None and (self._clock is None or latest > self._clock):
            self._clock = latest
        # Tapes (last bar per symbol) are only persisted where something happened: rewriting every
        # symbol's tape on every bar cost more than the rest of the venue together at 100 symbols.
        touched = {e.client_order_id for e in events}
        symbols = {f.symbol for f in fills} | {
            o.symbol for o in (self.broker.order(c) for c in touched) if o is not None
        }
        self._persist(events, fills, symbols)

    def drain(self) -> BrokerUpdates:
        """Events and fills since the last drain."""
        if not self._events and not self._fills:
            return BrokerUpdates()
        updates = BrokerUpdates(events=tuple(self._events), fills=tuple(self._fills))
        self._events, self._fills = [], []
        return updates

    async def broker_view(self) -> BrokerView:
        orders, fills = self.broker.orders(), self.broker.fills()
        acted = [
            *(o.created_ts for o in orders.values()),
            *(f.ts for f in fills),
            *([self._clock] if self._clock is not None else []),
        ]
        return BrokerView(
            orders=orders,
            fills=fills,
            positions=self.broker.positions(),
            clock=max(acted, default=None),
        )

    # ---- lifecycle --------------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Run the background WAL checkpoint's pass now (what a second between live bars does)."""
        checkpointer = self._checkpointer
        if checkpointer is not None:
            checkpointer.checkpoint_now()

    def close(self) -> None:
        """Fold the log into the tables and close the venue file; safe to call twice. A fold
        that fails is logged and left to the next open."""
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()
        con, self._con = self._con, None
        if con is not None:
            self._fold_or_log(con)
            with contextlib.suppress(sqlite3.Error):
                con.close()

    def __enter__(self) -> PaperExecution:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> PaperExecution:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- internals --------------------------------------------------------------------------------
    def _now(self, at_least: datetime | None = None) -> datetime:
        """The venue's clock: the latest bar it has seen (simulated time), else the wall clock."""
        clock = self._clock  # once per order: no list, no max() over it
        if clock is None:
            return at_least if at_least is not None else datetime.now(UTC)
        return at_least if at_least is not None and at_least > clock else clock

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")  # the thread checkpoints
            con.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            msg = f"paper venue {self.path}: cannot open ({storage_cause(e, self.path) or e})"
            raise StorageError(msg) from None
        return con

    def _load(self, con: sqlite3.Connection) -> SimBroker:
        try:
            self._fold_log(con)  # a venue that was not closed (kill -9) left its log
        except StorageError:
            self._con = None
            con.close()
            raise
        where = "venue_orders"
        try:
            orders = tuple(
                msgspec.json.decode(data, type=VenueOrder)
                for (data,) in con.execute("SELECT data FROM venue_orders ORDER BY sequence")
            )
            where = "venue_fills"
            fills = tuple(
                msgspec.json.decode(data, type=Fill)
                for (data,) in con.execute("SELECT data FROM venue_fills ORDER BY id")
            )
            where = "venue_tapes"
            tapes = {
                symbol: msgspec.json.decode(data, type=SymbolTape)
                for symbol, data in con.execute("SELECT symbol, data FROM venue_tapes")
            }
        except (sqlite3.Error, msgspec.DecodeError) as e:
            self.close()
            msg = (
                f"paper venue {self.path}: table {where} unreadable ({' '.join(str(e).split())}); "
                "move the file away to start a fresh venue"
            )
            raise StorageError(msg) from None
        state = SimBrokerState(orders=orders, fills=fills, tapes=tapes)
        return SimBroker.from_state(state, config=self.config)

    def _persist(
        self, events: Sequence[OrderEvent], fills: Sequence[Fill], symbols: Iterable[str]
    ) -> None:
        """Commit what changed (orders named by the events, new fills, tapes), then queue the updates."""
        con = self._con
        if con is None:
            msg = f"paper venue {self.path}: used after close"
            raise InvariantError(msg)
        venues = {
            e.client_order_id: v
            for e in events
            if (v := self.broker.venue_order(e.client_order_id)) is not None
        }
        tapes = {s: t for s in symbols if (t := self.broker.tape(s)) is not None}
        if venues or fills or tapes:
            changes = VenueChanges(orders=tuple(venues.values()), fills=tuple(fills), tapes=tapes)
            try:
                with self._write_lock:  # one statement: SQLite commits it on its own
                    con.execute(_APPEND_CHANGES, (self._encode(changes),))
            except sqlite3.Error as e:
                msg = f"paper venue {self.path}: write failed ({storage_cause(e, self.path) or e})"
                raise StorageError(msg) from None
        self._fills_saved += len(fills)
        if fills and _CRASH_AFTER_VENUE_FILLS and self._fills_saved >= _CRASH_AFTER_VENUE_FILLS:
            os.kill(os.getpid(), signal.SIGKILL)  # the venue has the fill, the journal not yet
        self._events.extend(events)
        self._fills.extend(fills)

    def _fold_or_log(self, con: sqlite3.Connection) -> None:
        """Fold what the log holds, if anything; a fold that fails is logged and left to the next
        pass or open (the rows stay in the log). Each checkpoint pass calls it (a second's calls
        at most: the log never grows with the daemon's uptime), off the order path, which it
        waits for on the write lock; close() calls it last."""
        if not con.execute("SELECT EXISTS (SELECT 1 FROM venue_log)").fetchone()[0]:
            return
        try:
            self._fold_log(con)
        except StorageError as e:
            log.warning("venue.fold_failed", path=str(self.path), error=str(e))

    def _fold_log(self, con: sqlite3.Connection) -> None:
        """Apply venue_log to the tables in the order committed, with the statements each call
        would have run on them, and delete the rows applied: FOLD_CHUNK rows per transaction. Each chunk's rows are read and turned into statements before the write lock
        is taken, and the lock is let go between chunks: a call on the order path waits for one
        chunk's SQLite writes at most, never for the decoding (a second of a busy replay's log
        held it for milliseconds). A crash between chunks leaves the rest of the log, applied in
        order at the next pass or open, on top of the rows already folded (upserts: the later
        row wins, as it would have)."""
        # The checkpoint thread's connection has its autocheckpoint raised to the backstop when it
        # connects (WalCheckpointer), so a chunk's commit never checkpoints inline.
        while True:
            chunk = self._read_log(con)
            if not chunk:
                return
            last, statements = chunk
            self._apply_chunk(con, last, statements)

    def _read_log(
        self, con: sqlite3.Connection
    ) -> tuple[int, list[tuple[str, str, list[tuple[object, ...]]]]] | None:
        """The oldest FOLD_CHUNK log rows as (last id, the statements to run with their table and
        parameters), or None when there are none. Only the fold deletes log rows, and a new row's
        id is above every id left, so the rows read are still the oldest when they are applied."""
        try:
            rows = con.execute(_READ_LOG, (FOLD_CHUNK,)).fetchall()
            if not rows:
                return None
            encode = self._encode
            orders: list[tuple[object, ...]] = []
            fills: list[tuple[object, ...]] = []
            tapes: list[tuple[object, ...]] = []
            for _, data in rows:
                changes = _CHANGES.decode(data)
                orders.extend(
                    (v.order.client_order_id, v.sequence, encode(v).decode())
                    for v in changes.orders
                )
                fills.extend((f.fill_id, encode(f).decode()) for f in changes.fills)
                tapes.extend((s, encode(t).decode()) for s, t in changes.tapes.items())
            # One executemany per table: each table's parameters keep the log's row order and
            # the tables share no keys, so the rows come out as applying each log row in turn.
            statements = [
                ("venue_orders", _UPSERT_ORDER, orders),
                ("venue_fills", _INSERT_FILL, fills),
                ("venue_tapes", _UPSERT_TAPE, tapes),
            ]
        except (sqlite3.Error, msgspec.DecodeError) as e:
            raise self._fold_error(e, "venue_log") from None
        return int(rows[-1][0]), statements

    def _apply_chunk(
        self,
        con: sqlite3.Connection,
        last: int,
        statements: list[tuple[str, str, list[tuple[object, ...]]]],
    ) -> None:
        """One transaction: the chunk's statements, then its log rows deleted."""
        where = "venue_orders"
        try:
            with self._write_lock, con:
                con.execute("BEGIN IMMEDIATE")
                for table, sql, params in statements:
                    where = table
                    if params:
                        con.executemany(sql, params)
                where = "venue_log"
                con.execute(_DELETE_LOG, (last,))
        except sqlite3.Error as e:
            raise self._fold_error(e, where) from None

    def _fold_error(self, e: sqlite3.Error | msgspec.DecodeError, where: str) -> StorageError:
        cause = storage_cause(e, self.path) if isinstance(e, sqlite3.Error) else None
        msg = (
            f"paper venue {self.path}: cannot fold {where} into the tables "
            f"({cause or ' '.join(str(e).split())}); move the file away to start a fresh venue"
        )
        return StorageError(msg)
