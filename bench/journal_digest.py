"""A digest of every journal table after bench_nautilus.py's live-journal run: run it on two commits
to show that a change to the journal writes the same rows (ids, columns and JSON alike).

    python bench/journal_digest.py [--bars 100000] [--instruments 1]

Prints one line per table: its name, row count and a hash of its rows in journal order. From
schema V3 on, `signals` is read through its view (one row per signal, V2's columns), so a V2
journal (main before V3) and a V3 one give the same line when they hold the same signals.
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import tempfile
from pathlib import Path

from bench_nautilus import run_ours, write_bars

from daemon.journal_schema import ROW_ORDER, TABLES


def table_digests(path: Path) -> dict[str, tuple[int, str]]:
    """Row count and a hash of the rows, per table, ordered as Journal.rows orders them."""
    con = sqlite3.connect(path)
    try:
        out = {}
        for table in TABLES:
            order = ROW_ORDER.get(table, "id")
            rows = con.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
            out[table] = (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()[:16])
        return out
    finally:
        con.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bars", type=int, default=100_000)
    p.add_argument("--instruments", type=int, default=1)
    p.add_argument("--writer", choices=("thread", "process"), default="thread")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bars = Path(tmp) / "bars.npz"
        write_bars(bars, args.instruments, args.bars)
        journal = Path(tmp) / "journal"
        journal.mkdir()
        result = run_ours(
            bars, journal=True, keep_journal=journal / "journal.sqlite", writer=args.writer
        )
        print(f"# {result['bars']} bars, {args.instruments} instruments, {result['orders']} orders")
        for table, (count, digest) in table_digests(journal / "journal.sqlite").items():
            print(f"{table:<14} {count:>8} {digest}")


if __name__ == "__main__":
    main()
