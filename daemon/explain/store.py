"""Explanations in their own SQLite file (<state_dir>/explanations.sqlite; WAL, synchronous NORMAL),
keyed by client_order_id. Never the order journal: a lost or corrupt explanation store costs
explanations, never an order.

ExplanationStore.open() is the writer (the explainer's worker thread; one connection, used by that
thread only); read_explanation() opens the file read-only per call (the API and the CLI)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec

from daemon.errors import InputError
from daemon.explain.values import Explanation

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS explanations ("
    " client_order_id TEXT PRIMARY KEY, ts TEXT NOT NULL, symbol TEXT NOT NULL,"
    " written REAL NOT NULL, doc BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS explanations_written ON explanations (written)",
)
_ENCODER = msgspec.json.Encoder()


class ExplanationStoreError(InputError):
    """The explanation store cannot be opened or read (the message names the file and the cause)."""


def _failed(path: Path, e: Exception) -> ExplanationStoreError:
    return ExplanationStoreError(f"{path}: explanation store unusable ({type(e).__name__}: {e})")


class ExplanationStore:
    """The writer's side: put() a batch of explanations in one transaction, prune() old rows."""

    def __init__(self, *, path: Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open (creating it) and check the file; ExplanationStoreError when it is not a usable database."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute("SELECT count(*) FROM explanations").fetchone()
        except (sqlite3.Error, OSError) as e:
            raise _failed(self.path, e) from None
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def put(self, explanations: list[Explanation]) -> None:
        """Insert (or replace) explanations in one transaction; sqlite3.Error goes to the caller."""
        if self._db is None or not explanations:
            return
        written = time.time()
        rows = [
            (e.client_order_id, e.ts.isoformat(), e.symbol, written, _ENCODER.encode(e))
            for e in explanations
        ]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO explanations VALUES (?, ?, ?, ?, ?)", rows)

    def prune(self, before: float) -> int:
        """Delete explanations written before `before` (epoch seconds, wall clock: a replay's
        orders carry old bar times); returns how many."""
        if self._db is None:
            return 0
        with self._db:
            self._db.execute("BEGIN")
            cursor = self._db.execute("DELETE FROM explanations WHERE written < ?", (before,))
        return cursor.rowcount


def read_explanation(path: Path, client_order_id: str) -> dict[str, Any] | None:
    """One order's explanation as plain JSON data, None when it has none (or no store exists);
    ExplanationStoreError when the file is not a readable store."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = db.execute(
                "SELECT doc FROM explanations WHERE client_order_id = ?", (client_order_id,)
            ).fetchone()
        finally:
            db.close()
    except sqlite3.Error as e:
        raise _failed(path, e) from None
    if row is None:
        return None
    try:
        doc: dict[str, Any] = msgspec.json.decode(row[0])
    except msgspec.DecodeError as e:
        raise _failed(path, e) from None
    return doc
