"""The journal's writer in a child process (Journal(writer="process")): the only writer.

The parent (daemon/journal.py) encodes each write as one JSON line (a frame: the batch's frozen
Structs, msgspec-encoded in one call) into a buffer, and sends the buffer over a socketpair when
it holds SEND_BYTES or a frame needs an answer. This child decodes each frame (each Struct's JSON
text is kept byte for byte as the row's `data`; the key columns come from a typed decode), and
writes the rows of queued frames into an open transaction whenever its socket has nothing more to
read, so they are written while the parent works; that transaction is committed with the next
write-ahead frame (its orders after them, as the thread writer's order-path commit does), at a
read's or flush's barrier, once the oldest has waited LINGER_SECONDS, or at MAX_GROUP frames.
Its encoding and SQLite work run on the other core, beside the parent's GIL.

Frames ("k"): q queued rows (no answer); a write-ahead orders and state changes (answered once
committed); r record() and p record_daily_pnl() (queued rows committed first, then the write in
a transaction of its own; answered); f barrier (queued rows committed; answered); c checkpoint;
x close. Answers are JSON lines [ok, error]; a failure of a commit that held queued rows is
sticky (every later frame is answered with it, and a `fail` line tells the parent at once).
End of file on the socket (the parent died) rolls back what is queued and exits, as the thread
writer's queue dies with its process; the child holds the parent's flock on `<journal>.lock`
(an inherited descriptor), so no second writer opens the file before it has exited.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from daemon.journal_lock import storage_cause
from daemon.journal_rows import (
    BatchRows,
    check_finite,
    event_row,
    fill_row,
    iso_utc,
    order_row,
    text_or_none,
    write_batch,
)
from daemon.journal_schema import (
    INSERT_DECISION,
    INSERT_REJECTED,
    INSERT_SIGNAL_BLOCK,
    JournalError,
)
from daemon.journal_writer import LINGER_SECONDS, MAX_GROUP
from strategy.types import Fill, Order, OrderEvent, Position, RiskDecision
from vlm_engine.thread_policy import lower_calling_thread

Raw = msgspec.Raw


class Frame(msgspec.Struct, kw_only=True):
    """One write as the parent sends it: each table's values as their JSON text."""

    k: str
    bars_rejected: list[Raw] = msgspec.field(default_factory=list)
    signals: Raw = Raw(b"[]")  # the JSON array as sent: one signal block's text
    decisions: list[Raw] = msgspec.field(default_factory=list)
    orders: list[Raw] = msgspec.field(default_factory=list)
    order_events: list[Raw] = msgspec.field(default_factory=list)
    fills: list[Raw] = msgspec.field(default_factory=list)
    positions: list[Raw] = msgspec.field(default_factory=list)
    state_changes: list[Raw] = msgspec.field(default_factory=list)
    kv: dict[str, str] = msgspec.field(default_factory=dict)
    kv_dt: dict[str, datetime] = msgspec.field(default_factory=dict)  # stored as isoformat()
    pnl: list[Any] | None = None


class _Rejected(msgspec.Struct):
    """The columns a rejected bar's row takes (any Struct with these fields)."""

    symbol: str | None = None
    ts: datetime | None = None
    reason: Any = None


class _StateChange(msgspec.Struct):
    """The columns a state change's row takes."""

    ts: datetime | None = None
    previous: Any = None
    current: Any = None
    reason: Any = None


_FRAME = msgspec.json.Decoder(Frame)
_REJECTED = msgspec.json.Decoder(_Rejected)
_STATE = msgspec.json.Decoder(_StateChange)
_DECISION = msgspec.json.Decoder(RiskDecision)
_ORDER = msgspec.json.Decoder(Order)
_EVENT = msgspec.json.Decoder(OrderEvent)
_FILL = msgspec.json.Decoder(Fill)
_POSITION = msgspec.json.Decoder(Position)


def _text_of(raw: Raw) -> str:
    return bytes(raw).decode()


def _decode(decoder: msgspec.json.Decoder[Any], raw: Raw, path: Path, table: str, key: str) -> Any:
    """One value typed; a non-finite number (JSON null where a float belongs) refuses the
    batch as encode_batch does."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as e:
        value = msgspec.json.decode(raw)
        name = value.get(key) if isinstance(value, dict) else None
        why = "a non-finite number" if "`null`" in str(e) else f"an invalid value ({e})"
        msg = f"journal {path}: refusing {table} row {name!r} with {why}"
        raise JournalError(msg) from None


def _signal_texts(block: Raw) -> list[tuple[str]]:
    """A frame's signals as the inside of their JSON array (no brackets), or nothing."""
    text = _text_of(block)
    return [(text[1:-1],)] if len(text) > 2 else []


def frame_rows(path: Path, frame: Frame) -> BatchRows:
    """A frame as rows, with the rows encode_batch gives for the same Structs (`data` is each
    value's JSON text as the parent encoded it); signals stay JSON texts (merged into one block
    at the commit). Raises JournalError for a non-finite number, as encode_batch."""
    rows = BatchRows()
    for raw in frame.bars_rejected:
        b = _decode(_REJECTED, raw, path, "bars_rejected", "symbol")
        rows.rejected.append((b.symbol, iso_utc(b.ts), text_or_none(b.reason), _text_of(raw)))
    rows.signals = _signal_texts(frame.signals)
    for raw in frame.decisions:
        d = _decode(_DECISION, raw, path, "decisions", "reason")
        rows.decisions.append(
            (
                d.intent.symbol,
                iso_utc(d.ts or d.intent.ts),
                int(d.accepted),
                d.reason,
                _text_of(raw),
            )
        )
    rows.orders = [
        order_row(_decode(_ORDER, raw, path, "orders", "client_order_id"), _text_of(raw))
        for raw in frame.orders
    ]
    rows.fills = [
        fill_row(_decode(_FILL, raw, path, "fills", "fill_id"), _text_of(raw))
        for raw in frame.fills
    ]
    rows.events = [
        event_row(_decode(_EVENT, raw, path, "order_events", "client_order_id"), _text_of(raw))
        for raw in frame.order_events
    ]
    for raw in frame.positions:
        p = _decode(_POSITION, raw, path, "positions", "symbol")
        rows.positions.append(
            (p.symbol, p.quantity, p.average_price, p.realized_pnl, _text_of(raw))
        )
    for raw in frame.state_changes:
        c = _decode(_STATE, raw, path, "state_changes", "reason")
        rows.states.append(
            (
                iso_utc(c.ts),
                text_or_none(c.previous),
                text_or_none(c.current),
                text_or_none(c.reason),
                _text_of(raw),
            )
        )
    rows.kv = list(frame.kv.items()) + [(k, v.isoformat()) for k, v in frame.kv_dt.items()]
    if frame.pnl is not None:
        rows.daily_pnl = [tuple(frame.pnl)]
    for o in rows.orders:
        check_finite(path, "orders", o[0], (o[5], o[6], o[8], o[9]))
    for f in rows.fills:
        check_finite(path, "fills", f["fill_id"], (f["qty"], f["price"], f["commission"]))
    for row in rows.positions:
        check_finite(path, "positions", row[0], row[1:4])
    return rows


class _Queue:
    """Queued frames' rows, merged much as journal_rows.write_group merges a group: the appending
    tables in one list each, kv one value per key (the last); fills and events stay frame by
    frame here (write_group also merges their inserts, with the orders' updates in runs)."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.frames = 0
        self.since = 0.0
        self.kv: dict[str, str | datetime] = {}  # a datetime: its isoformat() at the commit
        self.clear_rows()

    def clear_rows(self) -> None:
        """Forget the rows written already (spilled into the open transaction); kv stays."""
        self.unwritten = False
        self.rejected: list[tuple[Any, ...]] = []
        self.signals: list[str] = []
        self.decisions: list[tuple[Any, ...]] = []
        self.steps: list[BatchRows] = []
        self.positions: list[tuple[Any, ...]] = []
        self.states: list[tuple[Any, ...]] = []

    def add_frame(self, path: Path, frame: Frame) -> None:
        """A queued frame; most hold only a signal block and the kv (no row to decode)."""
        if (
            frame.decisions
            or frame.fills
            or frame.order_events
            or frame.positions
            or frame.bars_rejected
            or frame.state_changes
            or frame.orders
            or frame.pnl is not None
        ):
            self.add(frame_rows(path, frame))
            return
        if not self.frames:
            self.since = time.monotonic()
        self.frames += 1
        self.unwritten = True
        self.signals += [text for (text,) in _signal_texts(frame.signals)]
        if frame.kv:
            self.kv.update(frame.kv)
        if frame.kv_dt:
            self.kv.update(frame.kv_dt)

    def add(self, rows: BatchRows) -> None:
        if not self.frames:
            self.since = time.monotonic()
        self.frames += 1
        self.unwritten = True
        self.rejected += rows.rejected
        self.signals += [s for (s,) in rows.signals]
        self.decisions += rows.decisions
        if rows.fills or rows.events or rows.orders:
            self.steps.append(BatchRows(orders=rows.orders, fills=rows.fills, events=rows.events))
        self.positions += rows.positions
        self.states += rows.states
        self.kv.update(rows.kv)

    def _write_appended(self, cur: sqlite3.Cursor, stage: Any) -> None:
        """Rejected bars, decisions, the signals as one block and the fills/events/orders steps,
        in batch order (positions, state changes and the kv are the caller's)."""
        for table, sql, params in (
            ("bars_rejected", INSERT_REJECTED, self.rejected),
            ("decisions", INSERT_DECISION, self.decisions),
        ):
            if params:
                stage(table)
                cur.executemany(sql, params)
        if self.signals:
            stage("signals")
            cur.execute(INSERT_SIGNAL_BLOCK, ("[" + ",".join(self.signals) + "]",))
        for step in self.steps:
            write_batch(cur, stage, step)

    def write_rows(self, cur: sqlite3.Cursor, stage: Any) -> None:
        """The queued rows but the kv, into the open transaction (then forgotten)."""
        self._write_appended(cur, stage)
        write_batch(cur, stage, BatchRows(positions=self.positions, states=self.states))
        self.clear_rows()

    def write(self, cur: sqlite3.Cursor, stage: Any, ahead: BatchRows | None) -> None:
        """The queued rows, then ahead's (its kv is newer than any queued value)."""
        self._write_appended(cur, stage)
        kv = self.kv
        if ahead is not None:
            kv = {**kv, **dict(ahead.kv)}
            ahead.kv = []
        texts = [(k, v.isoformat() if isinstance(v, datetime) else v) for k, v in kv.items()]
        tail = BatchRows(positions=self.positions, states=self.states, kv=texts)
        write_batch(cur, stage, tail)
        if ahead is not None:
            if ahead.signals:
                ahead.signals = [("[" + ",".join(s for (s,) in ahead.signals) + "]",)]
            write_batch(cur, stage, ahead)  # its signals: one block


class ChildWriter:
    """The child's loop: one connection, frames in order, the background checkpoint beside it."""

    def __init__(
        self, sock: socket.socket, path: Path, synchronous: str, checkpoint: float | None
    ) -> None:
        self.sock = sock
        self.path = path
        self.queue = _Queue()
        self.failure: str | None = None
        self.mutex = threading.Lock()  # held from BEGIN to COMMIT: the checkpointer's WAL
        # restart skips its pass meanwhile
        self.in_transaction = False
        self.where = "begin"
        self.con = sqlite3.connect(path, isolation_level=None, timeout=5.0, check_same_thread=False)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self.checkpointer = None
        if checkpoint is not None:
            from daemon.wal_checkpoint import BACKSTOP_PAGES, WalCheckpointer

            self.con.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
            self.checkpointer = WalCheckpointer(
                path, checkpoint, event="journal.checkpoint_failed", write_lock=self.mutex
            )
            self.checkpointer.start()

    def run(self) -> None:
        buffer = b""
        sock = self.sock
        while True:
            timeout = None
            if self.queue.frames:
                timeout = max(0.0, self.queue.since + LINGER_SECONDS - time.monotonic())
            if self.queue.unwritten and self.failure is None:
                self._spill()  # nothing to read now: write what is queued ahead of its commit
            ready, _, _ = select.select([sock], [], [], timeout)
            if not ready:
                self._commit_queue()
                continue
            data = sock.recv(1 << 20)
            if not data:
                return  # the parent is gone: what is queued dies with it
            lines = (buffer + data).split(b"\n")
            buffer = lines.pop()
            for line in lines:
                try:
                    frame = _FRAME.decode(line)
                except (msgspec.DecodeError, msgspec.ValidationError) as e:
                    self._end()
                    self._fail(f"frame refused: {e}")  # the parent stops waiting on it
                    continue
                if self._handle(frame):
                    return

    def _handle(self, frame: Frame) -> bool:
        """One frame; True once closed."""
        kind = frame.k
        if kind == "q":
            if self.failure is None:
                try:
                    self.queue.add_frame(self.path, frame)
                except JournalError as e:
                    self._fail(f"group_commit refused: {e}")
                if self.queue.frames >= MAX_GROUP:
                    self._commit_queue()
            return False
        error: str | None = self.failure
        if error is None:
            if kind == "a":
                try:
                    ahead = frame_rows(self.path, frame)
                except JournalError as e:
                    error = str(e)  # refused before anything is written: not sticky
                else:
                    error = self._commit(ahead, what="record_orders_ahead")
            elif kind in ("r", "p"):
                error = self._commit_queue()
                if error is None:
                    try:
                        rows = frame_rows(self.path, frame)
                    except JournalError as e:
                        error = str(e)
                    else:
                        error = self._commit(
                            rows, what="record" if kind == "r" else "record_daily_pnl"
                        )
            elif kind in ("f", "x"):
                error = self._commit_queue()
            elif kind == "c" and self.checkpointer is not None:
                error = self._commit_queue()
                self.checkpointer.checkpoint_now()
        if kind == "x":
            self._end()
            if self.checkpointer is not None:
                self.checkpointer.stop()
            self.con.close()
        self._send([error is None, error])
        return kind == "x"

    def _stage(self, name: str) -> None:
        self.where = name

    def _begin(self) -> sqlite3.Cursor:
        cur = self.con.cursor()
        if not self.in_transaction:
            self.mutex.acquire()
            self.where = "begin"
            try:
                cur.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.mutex.release()
                raise
            self.in_transaction = True
        return cur

    def _end(self) -> None:
        """Roll back whatever is open and let the checkpointer in again."""
        if self.in_transaction:
            if self.con.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.con.execute("ROLLBACK")
            self.in_transaction = False
            self.mutex.release()

    def _spill(self) -> None:
        """Write the queued rows into the open transaction (opening it) while the parent works:
        the next commit has only its own rows left to write. A failure is sticky."""
        try:
            self.queue.write_rows(self._begin(), self._stage)
        except (sqlite3.Error, OverflowError, ValueError, TypeError) as e:
            self._end()
            self._fail(self._error(e, "group_commit"))

    def _error(self, e: BaseException, what: str) -> str:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        detail = storage_cause(e, self.path) or detail
        return f"{what} failed at {self.where}: {detail}"

    def _commit_queue(self) -> str | None:
        if not self.queue.frames:
            return self.failure
        return self._commit(None, what="group_commit")

    def _commit(self, rows: BatchRows | None, *, what: str) -> str | None:
        """One transaction (the open one, if rows were spilled into it): the queued rows, then
        `rows`; an error (a failure that lost queued rows is sticky, and told at once)."""
        queued = self.queue.frames > 0
        try:
            cur = self._begin()
            self.queue.write(cur, self._stage, rows)
            self.where = "commit"
            cur.execute("COMMIT")
            self.in_transaction = False
            self.mutex.release()
        except (sqlite3.Error, OverflowError, ValueError, TypeError) as e:
            self._end()
            error = self._error(e, what)
            if queued:
                self._fail(error)
            return error
        finally:
            self.queue.clear()
        return None

    def _fail(self, error: str) -> None:
        if self.failure is None:
            self.failure = error
            self._send(["fail", error])
        self.queue.clear()

    def _send(self, answer: list[Any]) -> None:
        self.sock.sendall(msgspec.json.encode(answer) + b"\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--lock-fd", type=int, required=True)  # held until this process exits
    p.add_argument("--path", type=Path, required=True)
    p.add_argument("--synchronous", choices=("normal", "full"), required=True)
    p.add_argument("--checkpoint-seconds", type=float, default=None)
    args = p.parse_args()
    sock = socket.socket(fileno=args.fd)
    try:
        writer = ChildWriter(sock, args.path, args.synchronous, args.checkpoint_seconds)
    except sqlite3.Error as e:
        sock.sendall(msgspec.json.encode(["fail", f"writer cannot open: {e}"]) + b"\n")
        sys.exit(1)
    writer.run()
    os._exit(0)  # the checkpointer's thread is a daemon; nothing else to wait for


# ---- the parent's side -----------------------------------------------------------------------
SEND_BYTES = 4096  # queued frames are sent once this much is buffered (or with the next answer)
ANSWER_SECONDS = 60.0  # longest wait for an answer before the writer counts as failed
SOCKET_BYTES = 4 << 20


class WriterProcess:
    """The parent's end: starts the child, buffers frames, sends them, waits for answers.
    Failures (an error the child reports, its death, its silence) are kept in `failure`."""

    def __init__(
        self,
        *,
        path: Path,
        synchronous: str,
        checkpoint_seconds: float | None,
        lock_fd: int,
    ) -> None:
        import daemon

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BYTES)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BYTES)
        root = str(Path(daemon.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [root, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
        )
        cmd = [
            sys.executable, "-m", "daemon.journal_process", "--fd", str(theirs.fileno()),
            "--lock-fd", str(lock_fd), "--path", str(path), "--synchronous", synchronous,
        ]  # fmt: skip
        if checkpoint_seconds is not None:
            cmd += ["--checkpoint-seconds", repr(checkpoint_seconds)]
        try:
            self.process = subprocess.Popen(
                cmd, pass_fds=(theirs.fileno(), lock_fd), env=env, stdin=subprocess.DEVNULL
            )
        finally:
            theirs.close()
        self.sock = ours
        self.buffer = bytearray()
        self.failure: str | None = None
        self._incoming = b""
        self._encode_into = msgspec.json.Encoder().encode_into
        self._lock = threading.Lock()  # one sender at a time (a frame is never split)
        self._pending = threading.Event()  # the buffer went from empty to not empty
        self._closed = False
        threading.Thread(
            target=self._flusher, name=f"journal-sender:{path.name}", daemon=True
        ).start()

    def queue(self, frame: dict[str, Any]) -> None:
        """Buffer a frame that needs no answer; send the buffer once it is big enough, or
        LINGER_SECONDS after it stopped being empty (the sender thread)."""
        with self._lock:
            was_empty = not self.buffer
            self._put(frame)
            if len(self.buffer) >= SEND_BYTES:
                self._send()
                self._poll()
            elif was_empty:
                self._pending.set()

    def _flusher(self) -> None:
        """Sends what a quiet parent left in the buffer: queued rows reach the child (and the
        disk) without waiting for the next write, as the thread writer's linger does."""
        lower_calling_thread()
        while True:
            self._pending.wait()
            time.sleep(LINGER_SECONDS)
            self._pending.clear()
            with self._lock:
                if self._closed:
                    return
                self._send()

    def buffer_frame(self, frame: dict[str, Any]) -> None:
        """Buffer a frame that needs no answer, without sending (an answer is awaited)."""
        with self._lock:
            was_empty = not self.buffer
            self._put(frame)
        if was_empty:
            self._pending.set()

    def send_if_full(self) -> None:
        if len(self.buffer) >= SEND_BYTES:
            with self._lock:
                self._send()

    def send(self, frame: dict[str, Any]) -> None:
        """Buffer a frame that needs an answer and send everything buffered (then answer())."""
        with self._lock:
            self._put(frame)
            self._send()

    def answer(self) -> str | None:
        """Wait for the answer to the last send(): None, or the error it reports."""
        with self._lock:
            return self._answer()

    def call(self, frame: dict[str, Any]) -> str | None:
        with self._lock:
            self._put(frame)
            self._send()
            return self._answer()

    def stop(self) -> str | None:
        """Close: everything queued committed, the child gone; the error, if any."""
        with self._lock:
            self._closed = True
            error = self.failure
            if self.process.poll() is None:
                self.buffer += b'{"k":"x"}\n'
                with contextlib.suppress(OSError):
                    self.sock.sendall(self.buffer)
                self.buffer.clear()
                if error is None:
                    error = self._answer()
        self._pending.set()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # it hangs: end it
            self.process.kill()
            self.process.wait()
        self.sock.close()
        return error

    def _put(self, frame: dict[str, Any]) -> None:
        """Append one frame, a JSON line, to the buffer (the caller holds the lock)."""
        self._encode_into(frame, self.buffer, -1)
        self.buffer += b"\n"

    def _send(self) -> None:
        if not self.buffer or self.failure is not None:
            self.buffer.clear()
            return
        try:
            self.sock.sendall(self.buffer)
        except OSError as e:
            self._died(f"writer process gone ({e.strerror or e})")
        self.buffer.clear()

    def _poll(self) -> None:
        """Take a failure the child told without being asked (a queued write's)."""
        try:
            data = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError as e:
            self._died(f"writer process gone ({e.strerror or e})")
            return
        if not data:
            self._died("writer process gone")
            return
        self._incoming += data
        self._lines()

    def _lines(self) -> list[Any] | None:
        """Parse the complete lines received; the last answer among them, if any."""
        *lines, self._incoming = self._incoming.split(b"\n")
        answer = None
        for line in lines:
            message = msgspec.json.decode(line)
            if message[0] == "fail":
                if self.failure is None:
                    self.failure = str(message[1])
            else:
                answer = message
        return answer

    def _answer(self) -> str | None:
        if self.failure is not None:
            return self.failure
        deadline = time.monotonic() + ANSWER_SECONDS
        while True:
            ready, _, _ = select.select([self.sock], [], [], 1.0)
            if ready:
                try:
                    data = self.sock.recv(1 << 16)
                except OSError as e:
                    data = b""
                    self._died(f"writer process gone ({e.strerror or e})")
                if not data:
                    self._died("writer process gone")
                    return self.failure
                self._incoming += data
                answer = self._lines()
                if answer is not None:
                    return None if answer[0] is True else str(answer[1])
                if self.failure is not None:
                    return self.failure
            elif self.process.poll() is not None:
                self._died(f"writer process exited with {self.process.returncode}")
                return self.failure
            elif time.monotonic() > deadline:
                self._died(f"writer process did not answer in {ANSWER_SECONDS:.0f} s")
                return self.failure

    def _died(self, why: str) -> None:
        if self.failure is None:
            self.failure = why


if __name__ == "__main__":
    main()
