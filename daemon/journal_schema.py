"""The journal's shape on disk: its error, tables, migrations and the SQL each write runs.

Every row keeps the value as msgspec JSON text (`data`) next to key columns (symbol, ts,
client_order_id, status, ...). Timestamps are ISO 8601 strings in UTC with microseconds, so they
sort as text. `orders` holds each order's current status, filled quantity and average price;
`order_events` is append-only; `fills` are idempotent by fill_id. Signals are the exception (V3):
one `signal_blocks` row per write holds its signals as a JSON array, and the `signals` view gives
them back one row per signal with the columns above.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import structlog

from daemon.errors import StorageError
from strategy.types import OrderStatus

log = structlog.get_logger("daemon.journal")


class JournalError(StorageError):
    """The journal could not be opened or written; stop trading rather than trade unjournaled."""


TERMINAL = tuple(str(s) for s in OrderStatus if s.is_terminal)

# Every index costs a page write per commit that touches its table: only the lookups we make
# (by client order id, fill id, symbol and time) are indexed; orders are scanned once at open.
# Migration i takes the schema from user_version i to i + 1; append, never edit a released one.
V1 = """
CREATE TABLE bars_rejected (
    id INTEGER PRIMARY KEY, symbol TEXT, ts TEXT, reason TEXT, data TEXT NOT NULL);
CREATE INDEX bars_rejected_symbol_ts ON bars_rejected (symbol, ts);
CREATE TABLE signals (
    id INTEGER PRIMARY KEY, symbol TEXT NOT NULL, ts TEXT NOT NULL, scorer TEXT NOT NULL,
    p_up REAL, confidence REAL, data TEXT NOT NULL);
CREATE INDEX signals_symbol_ts ON signals (symbol, ts);
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY, symbol TEXT NOT NULL, ts TEXT, accepted INTEGER NOT NULL,
    reason TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX decisions_symbol_ts ON decisions (symbol, ts);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY, client_order_id TEXT NOT NULL UNIQUE, seq INTEGER,
    symbol TEXT NOT NULL, side TEXT NOT NULL, order_type TEXT NOT NULL,
    quantity REAL NOT NULL CHECK (quantity > 0), limit_price REAL,
    status TEXT NOT NULL, filled_quantity REAL NOT NULL, average_fill_price REAL NOT NULL,
    fill_quantity REAL NOT NULL DEFAULT 0, reason TEXT NOT NULL, broker_order_id TEXT,
    created_ts TEXT NOT NULL, updated_ts TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE order_events (
    id INTEGER PRIMARY KEY, client_order_id TEXT NOT NULL, ts TEXT NOT NULL, status TEXT NOT NULL,
    filled_quantity REAL NOT NULL, data TEXT NOT NULL);
CREATE INDEX order_events_coid ON order_events (client_order_id);
CREATE TABLE fills (
    id INTEGER PRIMARY KEY, fill_id TEXT NOT NULL UNIQUE, client_order_id TEXT NOT NULL,
    symbol TEXT NOT NULL, side TEXT NOT NULL, quantity REAL NOT NULL CHECK (quantity > 0),
    price REAL NOT NULL CHECK (price > 0), commission REAL NOT NULL, ts TEXT NOT NULL,
    data TEXT NOT NULL);
CREATE INDEX fills_coid ON fills (client_order_id);
CREATE INDEX fills_symbol_ts ON fills (symbol, ts);
CREATE TABLE positions (
    symbol TEXT PRIMARY KEY, quantity REAL NOT NULL, average_price REAL NOT NULL,
    realized_pnl REAL NOT NULL, data TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE state_changes (
    id INTEGER PRIMARY KEY, ts TEXT, previous TEXT, current TEXT, reason TEXT,
    data TEXT NOT NULL);
CREATE INDEX state_changes_ts ON state_changes (ts);
CREATE TABLE daily_pnl (
    day TEXT PRIMARY KEY, equity REAL NOT NULL, realized REAL NOT NULL,
    unrealized REAL NOT NULL, ts TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""

# v2: the journal is a write-ahead log first. Each secondary index costs one more WAL page per
# commit: dropping the five that no hot-path read uses halved record() (1.9 -> 0.95 ms for a
# 100-symbol batch). Offline analysis can create what it needs on a copy.
V2 = """
DROP INDEX IF EXISTS bars_rejected_symbol_ts;
DROP INDEX IF EXISTS signals_symbol_ts;
DROP INDEX IF EXISTS decisions_symbol_ts;
DROP INDEX IF EXISTS fills_symbol_ts;
DROP INDEX IF EXISTS state_changes_ts;
"""


# v3: a journal row per signal cost the live journal most of its time per bar (a JSON encode, a
# timestamp string and a tuple per symbol, then a row insert per symbol). A batch's signals (or a
# group commit's: whatever one write holds, in order) are one row of `signal_blocks`, the msgspec
# JSON array of its Signals, encoded in one call. `signals` becomes a view that unpacks the blocks
# into V2's columns (each signal's `data` is its own JSON text, byte for byte, as SQLite keeps
# JSON text as written), so every reader (SQL, Journal.rows, counts) reads the rows it read before.
# Also dropped: the two indexes no reader uses (order_events and fills by client order id; the
# updates look orders up by their own unique index), one page write less per commit each.
# V2's ts column from the JSON's RFC 3339 text (msgspec writes 6 fraction digits or none, and a
# Z or an offset): UTC, microseconds, '+00:00' (journal_rows.iso_utc); strftime converts offsets.
_JSON_TS = "json_extract(j.value, '$.ts')"
_VIEW_TS = (
    f"strftime('%Y-%m-%dT%H:%M:%S', {_JSON_TS}) || '.' || CASE WHEN substr({_JSON_TS}, 20, 1) "
    f"= '.' THEN substr({_JSON_TS}, 21, 6) ELSE '000000' END || '+00:00'"
)
SIGNALS_VIEW = f"""
CREATE VIEW signals (id, symbol, ts, scorer, p_up, confidence, data) AS
SELECT row_number() OVER (ORDER BY b.id, j.key), json_extract(j.value, '$.symbol'), {_VIEW_TS},
    json_extract(j.value, '$.scorer'), json_extract(j.value, '$.p_up'),
    json_extract(j.value, '$.confidence'), j.value
FROM signal_blocks AS b, json_each(b.data) AS j
"""
SIGNALS_PER_MIGRATED_BLOCK = 1000


def migrate_v3(con: sqlite3.Connection) -> None:
    """V2 -> V3: the signal rows, in id order, into blocks of up to SIGNALS_PER_MIGRATED_BLOCK;
    a row whose data is not JSON refuses the migration (nothing changes) with JournalError."""
    bad = con.execute("SELECT id FROM signals WHERE NOT json_valid(data) LIMIT 1").fetchone()
    if bad is not None:
        msg = f"corrupt row {bad[0]} in table signals: data is not JSON; cannot migrate to V3"
        raise JournalError(msg)
    con.execute("CREATE TABLE signal_blocks (id INTEGER PRIMARY KEY, data TEXT NOT NULL)")
    cur = con.execute("SELECT data FROM signals ORDER BY id")
    while block := cur.fetchmany(SIGNALS_PER_MIGRATED_BLOCK):
        con.execute(
            "INSERT INTO signal_blocks (data) VALUES (?)",
            ("[" + ",".join(str(r[0]) for r in block) + "]",),
        )
    con.execute("DROP TABLE signals")
    con.execute(SIGNALS_VIEW)
    con.execute("DROP INDEX IF EXISTS order_events_coid")
    con.execute("DROP INDEX IF EXISTS fills_coid")


Migration = str | Callable[[sqlite3.Connection], None]
MIGRATIONS: tuple[Migration, ...] = (V1, V2, migrate_v3)
SCHEMA_VERSION = len(MIGRATIONS)
TABLES = (  # as readers see them: `signals` is a view over `signal_blocks` (V3)
    "bars_rejected",
    "signals",
    "decisions",
    "orders",
    "order_events",
    "fills",
    "positions",
    "state_changes",
    "daily_pnl",
    "kv",
)

ROW_ORDER = {"positions": "symbol", "daily_pnl": "day", "kv": "key"}  # the rest: by id

INSERT_REJECTED = "INSERT INTO bars_rejected (symbol, ts, reason, data) VALUES (?, ?, ?, ?)"
INSERT_SIGNAL_BLOCK = "INSERT INTO signal_blocks (data) VALUES (?)"
INSERT_DECISION = (
    "INSERT INTO decisions (symbol, ts, accepted, reason, data) VALUES (?, ?, ?, ?, ?)"
)
UPSERT_ORDER = """
INSERT INTO orders (client_order_id, seq, symbol, side, order_type, quantity, limit_price, status,
    filled_quantity, average_fill_price, reason, broker_order_id, created_ts, updated_ts, data)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (client_order_id) DO UPDATE SET
    seq = excluded.seq, symbol = excluded.symbol, side = excluded.side,
    order_type = excluded.order_type, quantity = excluded.quantity,
    limit_price = excluded.limit_price, status = excluded.status,
    filled_quantity = excluded.filled_quantity, average_fill_price = excluded.average_fill_price,
    reason = excluded.reason, broker_order_id = excluded.broker_order_id,
    created_ts = excluded.created_ts, updated_ts = excluded.updated_ts, data = excluded.data
"""
INSERT_FILL = """
INSERT INTO fills (fill_id, client_order_id, symbol, side, quantity, price, commission, ts, data)
VALUES (:fill_id, :coid, :symbol, :side, :qty, :price, :commission, :ts, :data)
ON CONFLICT (fill_id) DO NOTHING
"""
# Mirrors Book.apply_fill: the order's filled quantity and average price follow its fills.
ORDER_FILLED = """
UPDATE orders SET
    average_fill_price = (average_fill_price * fill_quantity + :price * :qty) / (fill_quantity + :qty),
    fill_quantity = fill_quantity + :qty,
    filled_quantity = filled_quantity + :qty,
    updated_ts = :ts
WHERE client_order_id = :coid
"""
INSERT_EVENT = (
    "INSERT INTO order_events (client_order_id, ts, status, filled_quantity, data) "
    "VALUES (:coid, :ts, :status, :filled, :data)"
)
# Mirrors Book.apply_order_event: terminal orders never change again. The terminal statuses are
# `<>` tests, not `NOT IN (...)`: SQLite builds an ephemeral b-tree from that IN list each time the
# statement runs (EXPLAIN: OpenEphemeral), which made this update cost about twice a plain one per
# row (status is NOT NULL, so the two filters keep the same rows).
_NOT_TERMINAL = " AND ".join(f"status <> '{s}'" for s in TERMINAL)
ORDER_STATUS = f"""
UPDATE orders SET
    filled_quantity = max(filled_quantity, :filled),
    status = CASE WHEN :status = 'partially_filled' AND max(filled_quantity, :filled) >= quantity
                  THEN 'filled' ELSE :status END,
    broker_order_id = coalesce(:broker_order_id, broker_order_id),
    reason = CASE WHEN :reason = '' THEN reason ELSE :reason END,
    updated_ts = :ts
WHERE client_order_id = :coid AND {_NOT_TERMINAL}
"""
# ORDER_FILLED then ORDER_STATUS for one order, in one statement (a group write's order with one
# fill and one status update in a run: the common case, a market order's fill and its status).
# SET reads the row as it was: the fill's quantity is added where ORDER_STATUS would read it, and
# the status parts apply only where the order was not terminal, as ORDER_STATUS's WHERE does.
ORDER_FILLED_THEN_STATUS = f"""
UPDATE orders SET
    average_fill_price = (average_fill_price * fill_quantity + :price * :qty) / (fill_quantity + :qty),
    fill_quantity = fill_quantity + :qty,
    filled_quantity = CASE WHEN {_NOT_TERMINAL} THEN max(filled_quantity + :qty, :filled)
                           ELSE filled_quantity + :qty END,
    status = CASE WHEN NOT ({_NOT_TERMINAL}) THEN status
                  WHEN :status = 'partially_filled' AND max(filled_quantity + :qty, :filled) >= quantity
                  THEN 'filled' ELSE :status END,
    broker_order_id = CASE WHEN {_NOT_TERMINAL} THEN coalesce(:broker_order_id, broker_order_id)
                           ELSE broker_order_id END,
    reason = CASE WHEN NOT ({_NOT_TERMINAL}) OR :reason = '' THEN reason ELSE :reason END,
    updated_ts = CASE WHEN {_NOT_TERMINAL} THEN :ts ELSE :fill_ts END
WHERE client_order_id = :coid
"""
UPSERT_POSITION = """
INSERT INTO positions (symbol, quantity, average_price, realized_pnl, data) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (symbol) DO UPDATE SET quantity = excluded.quantity,
    average_price = excluded.average_price, realized_pnl = excluded.realized_pnl,
    data = excluded.data
"""
INSERT_STATE = (
    "INSERT INTO state_changes (ts, previous, current, reason, data) VALUES (?, ?, ?, ?, ?)"
)
UPSERT_KV = "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
UPSERT_PNL = """
INSERT INTO daily_pnl (day, equity, realized, unrealized, ts) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (day) DO UPDATE SET equity = excluded.equity, realized = excluded.realized,
    unrealized = excluded.unrealized, ts = excluded.ts
"""
SEQUENCE_KEY = "order_sequence"


def migrate(con: sqlite3.Connection, path: Path) -> int:
    """Bring the schema to SCHEMA_VERSION, one transaction per step; returns the version."""
    version = int(con.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        msg = (
            f"journal {path}: schema version {version} is newer than this build's "
            f"{SCHEMA_VERSION}; upgrade vlmtrader"
        )
        raise JournalError(msg)
    for target in range(version + 1, SCHEMA_VERSION + 1):
        step = MIGRATIONS[target - 1]
        con.execute("BEGIN IMMEDIATE")
        try:
            if isinstance(step, str):
                for statement in step.split(";"):
                    if statement.strip():
                        con.execute(statement)
            else:
                step(con)
            con.execute(f"PRAGMA user_version = {target}")
            con.execute("COMMIT")
        except JournalError as e:  # a step's refusal: name the journal
            con.execute("ROLLBACK")
            msg = f"journal {path}: {e}"
            raise JournalError(msg) from None
        except BaseException:
            con.execute("ROLLBACK")
            raise
        log.info("journal.migrated", path=str(path), schema_version=target)
    return max(version, SCHEMA_VERSION)
