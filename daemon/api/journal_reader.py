"""JournalReader: the dashboard's read-only queries of the order journal.

Each query opens its own read-only SQLite connection in a worker thread (WAL lets readers run
beside the daemon's writer), so a page load never takes the journal's lock or the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from daemon.errors import InputError

ORDER_COLUMNS = (
    "client_order_id",
    "symbol",
    "side",
    "order_type",
    "quantity",
    "status",
    "filled_quantity",
    "average_fill_price",
    "reason",
    "created_ts",
    "updated_ts",
)


class JournalReader:
    """Read-only views of the journal at `path`; an unreadable journal raises InputError."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def orders(self, *, limit: int, symbol: str | None = None) -> list[dict[str, Any]]:
        """The newest orders first (at most `limit`), of one symbol or all."""
        where, params = ("WHERE symbol = ?", (symbol,)) if symbol else ("", ())
        sql = f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders {where} ORDER BY id DESC LIMIT ?"
        return await self._rows(sql, (*params, limit))

    async def rejections(self) -> dict[str, int]:
        """Risk rejections by reason over the whole journal."""
        rows = await self._rows(
            "SELECT reason, count(*) AS n FROM decisions WHERE accepted = 0 GROUP BY reason", ()
        )
        return {str(r["reason"]): int(r["n"]) for r in rows}

    async def daily_equity(self, *, limit: int) -> list[dict[str, Any]]:
        """The journaled end-of-day equity and P&L, oldest first (the last `limit` days)."""
        rows = await self._rows(
            "SELECT day, equity, realized, unrealized FROM daily_pnl ORDER BY day DESC LIMIT ?",
            (limit,),
        )
        return rows[::-1]

    async def _rows(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._read, sql, params)

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        try:
            con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=2.0)
        except sqlite3.Error as e:
            msg = f"journal {self.path}: cannot be opened for reading: {e}"
            raise InputError(msg) from None
        try:
            con.row_factory = sqlite3.Row
            return [dict(row) for row in con.execute(sql, params).fetchall()]
        except sqlite3.Error as e:
            msg = f"journal {self.path}: read failed: {e}"
            raise InputError(msg) from None
        finally:
            con.close()
