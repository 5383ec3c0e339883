"""The SQLite journal (WAL): the daemon's source of truth across restarts.

Write-ahead: an order is committed before the broker sees it. On the order path
(record_orders_ahead) a batch's orders, state changes and kv go into one small commit of their own;
its signals, decisions, fills, events and positions are queued to a group-committing writer thread
(daemon/journal_writer.py) with its own connection, which commits what is queued in one
transaction off the order path, once the batch's orders are at the broker (order_path()). Once a
group has gathered in the queue (journal_writer.CARRY_AT batches, or its oldest row has waited
CARRY_AFTER_SECONDS, half the writer's linger), the next batch's order commit carries it (earlier
batches' rows, never an order), older rows first: a busy run pays one commit per batch with
orders, and the queued tables' pages once per group, not once per order commit; the writer's
own commit is left for quiet times (a live bar a minute). Every other write (record) and every
read first waits for that writer, so it sees every row written before it; the on-disk shape is
in daemon/journal_schema.py.

Durability (`synchronous`): in WAL mode NORMAL survives a crash of the process (kill -9): a
committed transaction is in the WAL file and the OS writes it out, but a power loss or kernel
crash may lose the last commits (the database stays consistent). FULL also fsyncs the WAL on
every order-path commit and survives power loss, at the price of one fsync per batch with orders
(bench/bench_journal.py prints its cost on your disk). The writer thread always commits with
NORMAL: the WAL is append-only, so the next order-path fsync also makes every row it wrote before
durable. Rows the writer had not committed at a crash are the broker's news (fills, status
events, which reconciliation recovers at the next start) or records of decisions already acted on;
an order is never among them. Orders lost with the last commits under NORMAL are still at the
broker and come back as external orders when the daemon reconciles on start. A second process
opening the same journal is refused (an flock on `<journal>.lock`), so two daemons can never hand
out the same order ids.

Journal(writer="process") keeps these guarantees with a child process as the only writer
(daemon/journal_process.py): record_orders_ahead returns once the child answers that the orders
are committed, in one transaction with every row queued before them (older first, as above); the
rest of the batch reaches the disk within ~0.1 s (the parent's and the child's lingers) or with
the next commit. The child holds the journal's lock with the parent and, once the parent is gone
(kill -9), rolls back what it had not committed and exits: the same rows are lost as with the
writer thread, never an order. Reads, flush() and record() are round trips, so they see every
row before them. A child that dies or stops answering (ANSWER_SECONDS) is a JournalError at the
next write, as a writer thread's failure is.

Over ~400 lines on purpose: one Journal holds the two connections, the mutex between them, the
order counter and the fill ids, and its writes and reads each depend on all of them; what splits
off cleanly lives beside it (journal_schema, journal_rows, journal_lock, journal_writer).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Annotated, Any, Literal, Unpack, cast

import msgspec
import structlog

from daemon.errors import InputError
from daemon.journal_lock import lock_holders, storage_cause, take_lock
from daemon.journal_process import WriterProcess
from daemon.journal_rows import (
    BATCH_KEYS,
    BatchArgs,
    BatchRows,
    _sequence_of,
    check_batch_keys,
    check_finite,
    daily_pnl_row,
    encode_batch,
    kv_text,
    write_batch,
    write_group,
)
from daemon.journal_schema import (
    MIGRATIONS,
    ROW_ORDER,
    SCHEMA_VERSION,
    SEQUENCE_KEY,
    TABLES,
    TERMINAL,
    JournalError,
    migrate,
)
from daemon.journal_writer import MAX_GROUP, GroupWriter
from daemon.wal_checkpoint import BACKSTOP_PAGES, WalCheckpointer
from strategy.types import Fill, Order, OrderStatus, Position, Signal

# Re-exported: callers and tests import the journal's names from here.
__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "TABLES",
    "Journal",
    "JournalConfig",
    "JournalError",
    "lock_holders",
    "storage_cause",
]

log = structlog.get_logger("daemon.journal")

Synchronous = Literal["normal", "full"]
Writer = Literal["thread", "process"]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
# One batch queued to the writer thread: (generation, its signals, its kv, its other tables with
# rows). Most batches hold only signals and the kv: those two apart cost no dict per batch to
# build here or to walk in the group write; `rest` is None unless the batch has other rows.
Queued = tuple[int, tuple[Signal, ...], dict[str, Any] | None, dict[str, Any] | None]


class JournalConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the journal lives and how hard each commit is pushed to disk."""

    path: str = "journal.sqlite"  # relative to state_dir
    synchronous: Synchronous = "normal"  # normal: survives process crash; full: also power loss
    checkpoint_seconds: PositiveFloat | None = 1.0  # background WAL checkpoint; null: inline
    writer: Writer = "thread"  # process: encoding and writes in a child process (the other core)


class Journal:
    """Append-mostly SQLite store: orders committed ahead of the broker, the rest group-committed."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "normal",
        checkpoint_seconds: float | None = 1.0,
        commit_every: int = 1,
        writer: Writer = "thread",
    ) -> None:
        """Args: checkpoint_seconds: period of the background WAL checkpoint; None = SQLite's own.
        commit_every: record() writes that share one transaction (1: each its own). Bar
        batches, the daemon's and the backtest's, go through record_orders_ahead, which commits
        an open group first and its orders alone. Grouped writes are committed by flush() and
        close(); a failed write rolls back the whole open group and raises JournalError.
        writer: "thread" (a group-committing thread beside the order path's own commits) or
        "process" (every write in a child process, daemon/journal_process.py; commit_every 1)."""
        if writer not in ("thread", "process"):
            msg = f"journal writer must be 'thread' or 'process', got {writer!r}"
            raise InputError(msg)
        if writer == "process" and commit_every != 1:
            msg = "journal commit_every applies to the thread writer; the process writer needs 1"
            raise InputError(msg)
        self.writer_kind: Writer = writer
        self._process: WriterProcess | None = None
        self._process_error_logged = False
        if synchronous not in ("normal", "full"):
            msg = f"journal synchronous must be 'normal' or 'full', got {synchronous!r}"
            raise InputError(msg)
        if checkpoint_seconds is not None and not checkpoint_seconds > 0:
            msg = f"journal checkpoint_seconds must be > 0, got {checkpoint_seconds!r}"
            raise InputError(msg)
        if commit_every < 1:
            msg = f"journal commit_every must be >= 1, got {commit_every!r}"
            raise InputError(msg)
        self.commit_every = commit_every
        self._uncommitted = 0
        self.path = Path(path)
        self.synchronous: Synchronous = synchronous
        self.checkpoint_seconds = checkpoint_seconds
        self._checkpointer: WalCheckpointer | None = None
        self._con: sqlite3.Connection | None = None
        self._lock_file: IO[bytes] | None = None
        self._mutex = threading.Lock()  # one SQLite writer at a time, without SQLite's busy sleeps
        self._sequence = 0
        self._known_fills: set[str] = set()
        self._persisted_sequence = 0
        self._last_error: str | None = None
        self._writer: GroupWriter[Queued] | None = None
        self._writer_con: sqlite3.Connection | None = None
        self._writer_error_raised = False
        # Batches handed out, and for each kv key the batch whose order-path commit wrote it:
        # the writer never overwrites such a key with an older batch's value.
        self._generation = 0
        self._kv_written_at: dict[str, int] = {}
        # Clear while the order path commits: the writer does not start a transaction then, and
        # ends its current one after the batch it is writing.
        self._order_path_idle = threading.Event()
        self._order_path_idle.set()
        self._holding_writer = False  # order_path(): the orders are not at the broker yet

    # ---- lifecycle ----------------------------------------------------------------------------
    def open(self) -> None:
        """Take the single-writer lock, create or migrate the schema, restore the order counter,
        start the group-committing writer."""
        if self._con is not None:
            msg = f"journal {self.path}: already open"
            raise JournalError(msg)
        self._lock_file = take_lock(self.path)
        con = writer_con = None
        try:
            con = self._connect()
            version, seq_row, kv_row = self._prepare(con)
            if self.writer_kind == "thread":
                writer_con = self._connect()
                self._configure(writer_con, synchronous="normal")
        except (sqlite3.Error, JournalError) as e:
            for c in (con, writer_con):
                if c is not None:
                    c.close()
            self._release_lock()
            if isinstance(e, JournalError):
                raise
            msg = f"journal {self.path}: cannot open ({storage_cause(e, self.path) or e})"
            raise JournalError(msg) from e
        persisted = int(kv_row[0]) if kv_row is not None else 0
        self._persisted_sequence = persisted
        self._sequence = max(int(seq_row[0] or 0), persisted)
        self._con, self._writer_con = con, writer_con
        # Every journaled fill id, kept in step with each write: a repeat is skipped without a
        # query, and fill_ids() answers from memory.
        self._known_fills = {r[0] for r in self._query("SELECT fill_id FROM fills")}
        self._last_error = None
        self._writer_error_raised = False
        if self.writer_kind == "process":
            assert self._lock_file is not None
            # Started in the background: its first answer is awaited by the first read or flush.
            self._process = WriterProcess(
                path=self.path,
                synchronous=self.synchronous,
                checkpoint_seconds=self.checkpoint_seconds,
                lock_fd=self._lock_file.fileno(),
            )
            self._process_error_logged = False
        else:
            self._writer = GroupWriter(
                name=f"journal-writer:{self.path.name}", commit=self._commit_group
            )
            self._writer.start()
        if self.checkpoint_seconds is not None and self._process is None:
            self._checkpointer = WalCheckpointer(
                self.path,
                self.checkpoint_seconds,
                event="journal.checkpoint_failed",
                write_lock=self._mutex,
            )
            self._checkpointer.start()
        log.info(
            "journal.opened",
            path=str(self.path),
            schema_version=version,
            synchronous=self.synchronous,
            order_sequence=self._sequence,
        )

    def flush(self) -> None:
        """Commit what the writer holds and the writes of an open group (commit_every > 1)."""
        if self._process is not None:
            self._call_process({"k": "f"}, "flush")
            return
        self._wait_for_writer(raise_failure=True)
        with self._transaction("flush", join_only=True):
            pass

    def checkpoint(self) -> None:
        """Run the background WAL checkpoint's pass now, on the calling thread (what a gap of
        checkpoint_seconds between live bars does; bench/bench_pipeline.py --paced); no-op when
        there is no background checkpoint."""
        if self._process is not None:
            self._call_process({"k": "c"}, "checkpoint")
            return
        checkpointer = self._checkpointer
        if checkpointer is not None:
            checkpointer.checkpoint_now()

    def close(self) -> None:
        """Commit what the writer holds and any open group, close the connections (checkpointing
        the WAL) and release the lock; safe to call twice. A writer failure not yet raised by a
        write is raised here, after everything is released."""
        failure: JournalError | None = None
        self._release_writer()
        process, self._process = self._process, None
        if process is not None:
            raised = self._writer_error_raised
            error = process.stop()
            if error is not None and not raised:
                self._writer_error_raised = True
                failure = self._process_failure(error, "close")
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.stop()
            if writer.failure is not None and not self._writer_error_raised:
                self._writer_error_raised = True
                failure = self._writer_failure(writer.failure)
        if self._con is not None and self._con.in_transaction and failure is None:
            self.flush()
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()
        writer_con, self._writer_con = self._writer_con, None
        con, self._con = self._con, None
        for c in (writer_con, con):
            if c is not None:
                with contextlib.suppress(sqlite3.Error):
                    c.close()
        if con is not None:
            log.info("journal.closed", path=str(self.path))
        self._release_lock()
        if failure is not None:
            raise failure

    def __enter__(self) -> Journal:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def writable(self) -> bool:
        """Cheap readiness check: open, last write succeeded, and the file is still writable."""
        return (
            self._con is not None
            and self._last_error is None
            and (self._writer is None or self._writer.failure is None)
            and (self._process is None or self._process.failure is None)
            and os.access(self.path, os.W_OK)
            and os.access(self.path.parent, os.W_OK)
        )

    @property
    def last_error(self) -> str | None:
        return self._last_error

    # ---- writes -------------------------------------------------------------------------------
    def next_order_sequence(self) -> int:
        """Next client order number; never repeats, also across restarts and kill -9."""
        self._sequence += 1
        return self._sequence

    def skip_order_sequence(self, used_up_to: int) -> None:
        """Count every client order number up to used_up_to as handed out (committed now): for a
        journal that adopted a broker's state without knowing the numbers used before it."""
        if used_up_to <= self._sequence:
            return
        self.record(kv={SEQUENCE_KEY: str(used_up_to)})
        self._sequence = max(self._sequence, used_up_to)
        self._persisted_sequence = max(self._persisted_sequence, used_up_to)

    def record_orders_ahead(self, **batch: Unpack[BatchArgs]) -> None:
        """The order path's write, with record()'s arguments. A batch with orders or a trading
        state change commits those and its kv now, in a small transaction of its own (one fsync
        under FULL) before the caller tells the broker; everything else is queued to the
        group-committing writer, which commits it off the order path. Raises JournalError, before
        anything is written, when an earlier write failed (also one of the writer's)."""
        if self._process is not None:
            self._ahead_in_process(self._process, batch)
            return
        # Called once per bar batch: the checks are inlined where a call would cost more.
        writer, con = self._writer, self._con
        if writer is None or con is None or writer.failure is not None:
            self._raise_writer_failure()
        if con is not None and con.in_transaction:
            self.flush()  # an open record() group (commit_every > 1) would lock the writer out
        if not BATCH_KEYS.issuperset(batch):
            check_batch_keys(self.path, batch)
        self._generation += 1
        # Most batches (strategy.kernel.journal_rows) hand over their signals and kv only.
        orders = batch.pop("orders", None)
        if orders:
            orders = list(orders)  # an empty iterator is truthy: listed, it is empty
        state_changes = batch.pop("state_changes", None)
        if state_changes:
            state_changes = list(state_changes)
        kv = batch.pop("kv", None)
        if orders or state_changes:
            ahead = BatchArgs(orders=orders or [], state_changes=state_changes or [], kv=kv)
            self._commit_now(
                encode_batch(self.path, ahead),
                what="record_orders_ahead",
                alone=True,
                queued=writer is not None and writer.ripe(),
            )
            kv = None
        signals = batch.pop("signals", None)
        signals = tuple(signals) if signals else ()
        # any(): most batches have no other rows (empty lists); an iterator counts as rows
        rest = self._queued_rows(batch, {}) if batch and any(batch.values()) else None
        if signals or kv or rest:
            assert writer is not None  # _raise_writer_failure checked that we are open
            writer.submit((self._generation, signals, dict(kv) if kv else None, rest or None))

    def _queued_rows(self, batch: BatchArgs, item: dict[str, Any]) -> dict[str, Any]:
        """The rows of a batch (its orders, state changes and kv taken out) that go to the
        writer, added to `item`: each table with rows as a tuple (the writer reads them on its
        thread or encodes them for its process; the values are frozen Structs), tables without
        rows left out, so most batches hand over a signal or two. Fills seen before are dropped
        here, in batch order, so the writer inserts each new fill once."""
        fills = batch.pop("fills", ())
        if fills:
            fills = self._new_fills(list(fills), key=lambda f: f.fill_id)
            self._known_fills.update(f.fill_id for f in fills)
        for name, values in cast("dict[str, Iterable[Any]]", batch).items():
            # an empty list (most tables, most batches) costs no tuple; an empty iterator, none kept
            if values and (rows := tuple(values)):
                item[name] = rows
        if fills:
            item["fills"] = fills
        return item

    @contextlib.contextmanager
    def order_path(self) -> Iterator[None]:
        """Around a batch's write-ahead commit and its submit: the writer thread starts on the
        batch's other rows only once the orders are at the broker (its Python work would take
        the GIL from the submit). A write or read that waits for the writer ends the hold."""
        self._holding_writer = True
        self._order_path_idle.clear()
        try:
            yield
        finally:
            self._release_writer()

    def _release_writer(self) -> None:
        self._holding_writer = False
        self._order_path_idle.set()

    def record(self, **batch: Unpack[BatchArgs]) -> None:
        """Write one batch (its values by table, see BatchArgs) in a single transaction, after
        everything the writer holds: all of it is committed, or none of it."""
        if self._process is not None:
            check_batch_keys(self.path, batch)
            self._record_in_process(dict(batch), kind="r", what="record")
            return
        rows = encode_batch(self.path, batch)
        self._wait_for_writer(raise_failure=True)
        self._generation += 1
        self._commit_now(rows, what="record")

    def record_daily_pnl(
        self, *, day: date, equity: float, realized: float, unrealized: float, ts: datetime
    ) -> None:
        """Upsert the P&L of one trading day (the last write of the day wins)."""
        row = daily_pnl_row(day=day, equity=equity, realized=realized, unrealized=unrealized, ts=ts)
        if self._process is not None:
            self._record_in_process({"pnl": row}, kind="p", what="record_daily_pnl")
            return
        self._wait_for_writer(raise_failure=True)
        self._commit_now(BatchRows(daily_pnl=[row]), what="record_daily_pnl")

    # ---- the process writer (daemon/journal_process.py) ----------------------------------------
    def _ahead_in_process(self, process: WriterProcess, batch: BatchArgs) -> None:
        """record_orders_ahead with the process writer: a frame with the orders and state changes
        (and the kv), answered once committed after every row queued before it; the batch's other
        rows follow as a queued frame, encoded while the child commits."""
        if process.failure is not None or self._con is None:
            self._raise_writer_failure()
        if not BATCH_KEYS.issuperset(batch):
            check_batch_keys(self.path, batch)
        self._generation += 1
        orders, state_changes = batch.pop("orders", None), batch.pop("state_changes", None)
        orders = list(orders) if orders else []
        state_changes = list(state_changes) if state_changes else []
        kv = batch.pop("kv", None)
        item = self._queued_rows(batch, {"k": "q"})
        if not (orders or state_changes):
            if kv:
                _put_kv(item, kv)
            if len(item) > 1:
                process.queue(item)
            return
        ahead: dict[str, Any] = {"k": "a", "orders": orders, "state_changes": state_changes}
        sequence, persist = self._sequence_of_orders(orders)
        if persist:
            kv = {**(kv or {}), SEQUENCE_KEY: str(sequence)}
        if kv:
            _put_kv(ahead, kv)
        process.send(ahead)
        if len(item) > 1:
            process.buffer_frame(item)  # sent after the answer, with the next frames
        error = process.answer()
        if error is not None:
            raise self._process_failure(error, "record_orders_ahead")
        process.send_if_full()
        self._after_orders(sequence, persist)

    def _record_in_process(self, batch: dict[str, Any], *, kind: str, what: str) -> None:
        """record() or record_daily_pnl() with the process writer: one frame, answered once
        committed (after everything queued before it, in a transaction of its own)."""
        process = self._process
        assert process is not None
        if process.failure is not None:
            self._raise_writer_failure()
        frame: dict[str, Any] = {"k": kind}
        orders = list(batch.pop("orders", None) or ())
        fills = self._new_fills(list(batch.pop("fills", None) or ()), key=lambda f: f.fill_id)
        kv = batch.pop("kv", None)
        for name, values in batch.items():
            frame[name] = values if name == "pnl" else tuple(values)
        if orders:
            frame["orders"] = orders
        if fills:
            frame["fills"] = fills
        sequence, persist = self._sequence_of_orders(orders)
        if persist:
            kv = {**(kv or {}), SEQUENCE_KEY: str(sequence)}
        if kv:
            _put_kv(frame, kv)
        self._generation += 1
        error = process.call(frame)
        if error is not None:
            raise self._process_failure(error, what)
        self._known_fills.update(f.fill_id for f in fills)
        self._after_orders(sequence, persist)

    def _sequence_of_orders(self, orders: list[Order]) -> tuple[int, bool]:
        """The counter after these orders, and whether the journal must store it with them.
        Refuses a non-finite number here: JSON carries it as null, which an optional price
        would take as None in the child."""
        for o in orders:
            values = (o.quantity, o.limit_price, o.filled_quantity, o.average_fill_price)
            check_finite(self.path, "orders", o.client_order_id, values)
        numbers = [_sequence_of(o.client_order_id) for o in orders]
        sequence = max(max((n for n in numbers if n is not None), default=0), self._sequence)
        return sequence, bool(orders) and sequence > self._persisted_sequence

    def _after_orders(self, sequence: int, persisted: bool) -> None:
        self._last_error = None
        if persisted:
            self._persisted_sequence = sequence
        self._sequence = max(self._sequence, sequence)

    def _call_process(self, frame: dict[str, Any], what: str) -> None:
        process = self._process
        assert process is not None
        self._require_open()
        error = process.call(frame)
        if error is not None:
            raise self._process_failure(error, what)

    def _process_failure(self, error: str, what: str) -> JournalError:
        """The JournalError for the process writer's error; logged once per error."""
        process = self._process
        if process is not None and process.failure == error:
            self._writer_error_raised = True  # sticky: close() does not raise it again
        if self._last_error != error:
            # the child's errors read "<write> failed at <stage>: <detail>"
            head, _, _ = error.partition(":")
            write, _, stage = head.partition(" failed at ")
            if not stage and head.endswith(" refused"):
                write, stage = head.removesuffix(" refused"), "encode"
            log.error(
                "journal.write_failed",
                path=str(self.path),
                write=write if stage else what,
                stage=stage or "encode",
                error=error,
            )
        self._last_error = error
        return JournalError(f"journal {self.path}: {error}")

    def _commit_now(
        self, rows: BatchRows, *, what: str, alone: bool = False, queued: bool = False
    ) -> None:
        """One transaction on the caller's thread (or a place in the open record() group, unless
        alone: then committed before returning, whatever commit_every says). queued: the
        writer's queue goes first into the same transaction (older batches' rows, never an
        order): one commit instead of two, and no wait for the writer thread's."""
        rows.fills = self._new_fills(rows.fills, key=lambda r: r["fill_id"])
        sequence = max(rows.max_sequence() or 0, self._sequence)
        if rows.orders and sequence > self._persisted_sequence:
            rows.kv.append((SEQUENCE_KEY, str(sequence)))
        if not rows:
            return
        generation = self._generation
        self._order_path_idle.clear()
        try:
            with self._transaction(what, alone=alone) as (cur, stage):
                if queued and self._writer is not None:
                    try:
                        # this batch's kv (newer) is written below: its keys' queued values not
                        ahead_keys = {key for key, _ in rows.kv}
                        self._write_queued(cur, stage, self._writer.take(), skip_kv=ahead_keys)
                    except JournalError as e:  # lost with the rollback: sticky, as the writer's
                        self._writer.fail(e)
                        raise
                write_batch(cur, stage, rows)
                # Under the mutex: the writer's next transaction skips these keys' older values.
                for key, _ in rows.kv:
                    self._kv_written_at[key] = generation
        finally:
            if not self._holding_writer:
                self._order_path_idle.set()
        self._known_fills.update(row["fill_id"] for row in rows.fills)
        if sequence > self._persisted_sequence and rows.orders:
            self._persisted_sequence = sequence
        # An order journaled with a number we have not handed out yet moves the counter past it.
        self._sequence = max(self._sequence, sequence)

    def _commit_group(self, writer: GroupWriter[Queued]) -> None:
        """The writer thread's transaction: up to MAX_GROUP queued batches (taken under the
        write lock, so the order path's commit cannot take newer ones ahead of them)."""
        self._order_path_idle.wait()
        with self._transaction("group_commit", writer=True) as (cur, stage):
            self._write_queued(cur, stage, writer.take(MAX_GROUP))

    def _write_queued(
        self,
        cur: sqlite3.Cursor,
        stage: Callable[[str], None],
        items: list[Queued],
        *,
        skip_kv: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        """Queued batches into the open transaction (journal_rows.write_group). A kv key keeps
        the last value queued, unless the order path wrote the key in a later batch or writes it
        in this transaction (skip_kv)."""
        if not items:
            return
        signals: list[Signal] = []
        batches: list[BatchArgs] = []
        latest: dict[str, Any] = {}
        for _, signals_of_batch, kv_of_batch, rest in items:
            if signals_of_batch:
                signals += signals_of_batch
            if kv_of_batch:
                latest.update(kv_of_batch)
            if rest:
                batches.append(cast("BatchArgs", rest))
        kv: list[tuple[str, str]] = []
        if latest:
            # each key's batch: the last that holds it (the newest holds them all, mostly)
            generation_of: dict[str, int] = {}
            for generation, _, kv_of_batch, _ in reversed(items):
                if kv_of_batch:
                    for key in kv_of_batch:
                        generation_of.setdefault(key, generation)
                    if len(generation_of) == len(latest):
                        break
            written_at = self._kv_written_at
            kv = [
                (str(k), kv_text(v))
                for k, v in latest.items()
                if written_at.get(k, -1) < generation_of[k] and k not in skip_kv
            ]
        if signals:  # the signals of the group in one block, ahead of the other tables' rows
            batches.insert(0, BatchArgs(signals=signals))
        try:
            write_group(self.path, cur, stage, batches, kv)
        except JournalError as e:  # a non-finite number from the broker: trading stops
            self._last_error = f"group_commit refused: {e}"
            log.error("journal.write_failed", path=str(self.path), write="group_commit",
                      stage="encode", error=str(e))  # fmt: skip
            raise

    def _new_fills(self, fills: list[Any], *, key: Callable[[Any], str]) -> list[Any]:
        """Fills not journaled (or queued) before and not repeated within the batch."""
        known, seen, new = self._known_fills, set(), []
        for fill in fills:
            fill_id = key(fill)
            if fill_id not in known and fill_id not in seen:
                seen.add(fill_id)
                new.append(fill)
        return new

    @contextlib.contextmanager
    def _transaction(
        self, what: str, *, join_only: bool = False, writer: bool = False, alone: bool = False
    ) -> Iterator[tuple[sqlite3.Cursor, Callable[[str], None]]]:
        """One write: its own transaction, or a place in the open group (commit_every > 1), which
        it commits when the group is full. join_only (flush) opens nothing and commits the group.
        writer: the group-committing writer's connection; writer or alone: one transaction per call."""
        where = ["begin"]

        def stage(name: str) -> None:
            where[0] = name

        failure: Exception | None = None
        with self._mutex:
            con = self._require_open()
            if writer:
                assert self._writer_con is not None
                con = self._writer_con
            every = 1 if writer or alone else self.commit_every
            try:
                cur = con.cursor()
                if not con.in_transaction and not join_only:
                    cur.execute("BEGIN IMMEDIATE")
                try:
                    yield cur, stage
                    if not writer:
                        self._uncommitted += 0 if join_only else 1
                    if con.in_transaction and (join_only or writer or self._uncommitted >= every):
                        where[0] = "commit"
                        cur.execute("COMMIT")
                        if not writer:
                            self._uncommitted = 0
                except BaseException:
                    if not writer:
                        self._uncommitted = 0
                    if con.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            con.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, OverflowError, ValueError, TypeError) as e:
                failure = e
        if failure is None:
            if not writer:
                self._last_error = None
            return
        detail = str(failure).splitlines()[0] if str(failure) else type(failure).__name__
        detail = storage_cause(failure, self.path) or detail
        self._last_error = f"{what} failed at {where[0]}: {detail}"
        log.error(
            "journal.write_failed", path=str(self.path), write=what, stage=where[0], error=detail
        )
        msg = f"journal {self.path}: {self._last_error}"
        raise JournalError(msg) from failure

    def _wait_for_writer(self, *, raise_failure: bool = False) -> None:
        """Until the writer has committed everything queued; raise_failure: raise what it failed with."""
        if self._holding_writer:
            self._release_writer()  # the writer cannot finish while held off
        if self._process is not None:
            error = self._process.call({"k": "f"})
            if error is not None:
                failure = self._process_failure(error, "group_commit")  # logged once
                if raise_failure:
                    self._writer_error_raised = True
                    raise failure
            return
        writer = self._writer
        if writer is not None:
            writer.wait_idle()
        if raise_failure:
            self._raise_writer_failure()

    def _raise_writer_failure(self) -> None:
        self._require_open()
        process = self._process
        if process is not None and process.failure is not None:
            self._writer_error_raised = True
            raise self._process_failure(process.failure, "group_commit")
        writer = self._writer
        if writer is not None and writer.failure is not None:
            self._writer_error_raised = True
            raise self._writer_failure(writer.failure)

    def _writer_failure(self, failure: BaseException) -> JournalError:
        if isinstance(failure, JournalError):
            return failure
        msg = f"journal {self.path}: group_commit failed: {type(failure).__name__}: {failure}"
        return JournalError(msg)

    # ---- reads --------------------------------------------------------------------------------
    def load_orders(self, *, open_only: bool = False) -> dict[str, Order]:
        """Orders by client order id in journal order, with their current status and fills."""
        sql = (
            "SELECT data, status, filled_quantity, average_fill_price, reason, broker_order_id, "
            "id FROM orders"
        )
        if open_only:
            sql += f" WHERE status NOT IN ({', '.join('?' * len(TERMINAL))})"
        sql += " ORDER BY id"
        rows = self._query(sql, TERMINAL if open_only else ())
        out: dict[str, Order] = {}
        for data, status, filled, avg, reason, broker_id, row_id in rows:
            base = self._decode(data, Order, "orders", row_id)
            try:
                state = OrderStatus(status)
            except ValueError:
                msg = (
                    f"journal {self.path}: corrupt row {row_id} in table orders: status {status!r}"
                )
                raise JournalError(msg) from None
            out[base.client_order_id] = msgspec.structs.replace(
                base,
                status=state,
                filled_quantity=filled,
                average_fill_price=avg,
                reason=reason,
                broker_order_id=broker_id,
            )
        return out

    def load_fills(self) -> list[Fill]:
        """Every fill in the order it was journaled (replaying them rebuilds the positions)."""
        return [
            self._decode(r[0], Fill, "fills", r[1])
            for r in self._query("SELECT data, id FROM fills ORDER BY id")
        ]

    def load_positions(self) -> dict[str, Position]:
        rows = self._query("SELECT data, symbol FROM positions ORDER BY symbol")
        return {
            p.symbol: p for p in (self._decode(r[0], Position, "positions", r[1]) for r in rows)
        }

    def fill_ids(self) -> set[str]:
        self._require_open()
        return set(self._known_fills)

    def get(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM kv WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def schema_version(self) -> int:
        return int(self._query("PRAGMA user_version")[0][0])

    def counts(self) -> dict[str, int]:
        """Rows per table."""
        return {t: int(self._query(f"SELECT count(*) FROM {t}")[0][0]) for t in TABLES}

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of one table as a dict, by insertion (positions, daily_pnl, kv: by key)."""
        if table not in TABLES:
            msg = f"journal has no table {table!r}; tables: {', '.join(TABLES)}"
            raise InputError(msg)
        self._wait_for_writer()
        with self._mutex:
            con = self._require_open()
            try:
                key = ROW_ORDER.get(table, "id")
                cur = con.execute(f"SELECT * FROM {table} ORDER BY {key}")
                names = [c[0] for c in cur.description]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
            except sqlite3.Error as e:
                msg = f"journal {self.path}: reading {table} failed: {e}"
                raise JournalError(msg) from e

    # ---- internals ----------------------------------------------------------------------------
    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        self._wait_for_writer()
        with self._mutex:
            con = self._require_open()
            try:
                return con.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as e:
                msg = f"journal {self.path}: read failed: {storage_cause(e, self.path) or e}"
                raise JournalError(msg) from e

    def _decode(self, data: str | bytes, type_: type[Any], table: str, row: object = "?") -> Any:
        try:
            return msgspec.json.decode(data, type=type_)
        except (msgspec.ValidationError, msgspec.DecodeError, TypeError) as e:
            detail = " ".join(str(e).split())
            msg = f"journal {self.path}: corrupt row {row} in table {table}: {detail}"
            raise JournalError(msg) from None

    def _require_open(self) -> sqlite3.Connection:
        if self._con is None:
            msg = f"journal {self.path}: not open"
            raise JournalError(msg)
        return self._con

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(
            self.path, isolation_level=None, timeout=5.0, check_same_thread=False
        )

    def _configure(self, con: sqlite3.Connection, *, synchronous: Synchronous) -> None:
        mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            msg = f"journal {self.path}: WAL mode unavailable (journal_mode={mode})"
            raise JournalError(msg)
        con.execute(f"PRAGMA synchronous={synchronous.upper()}")
        if self.checkpoint_seconds is not None:  # the thread checkpoints; SQLite's is a backstop
            con.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")

    def _prepare(self, con: sqlite3.Connection) -> tuple[int, Any, Any]:
        self._configure(con, synchronous=self.synchronous)
        version = migrate(con, self.path)
        seq_row = con.execute("SELECT max(seq) FROM orders").fetchone()
        kv_row = con.execute("SELECT value FROM kv WHERE key = ?", (SEQUENCE_KEY,)).fetchone()
        return version, seq_row, kv_row

    def _release_lock(self) -> None:
        f, self._lock_file = self._lock_file, None
        if f is not None:
            f.close()


def _put_kv(frame: dict[str, Any], kv: Mapping[str, object]) -> None:
    """A batch's kv into a frame: datetimes apart (the child stores their isoformat())."""
    text: dict[str, str] = {}
    stamps: dict[str, datetime] = {}
    for key, value in kv.items():
        if isinstance(value, datetime):
            stamps[key] = value
        else:
            text[key] = value if type(value) is str else str(value)
    if text:
        frame["kv"] = text
    if stamps:
        frame["kv_dt"] = stamps
