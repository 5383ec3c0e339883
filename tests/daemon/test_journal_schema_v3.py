"""Schema V3: signals stored as one block row per write, read back through the `signals` view with
V2's columns. A V2 journal with rows migrates and reads the same answers; a corrupt one is refused
before anything changes."""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest

from daemon.journal import MIGRATIONS, SCHEMA_VERSION, Journal, JournalError
from daemon.journal_rows import iso_utc
from daemon.journal_schema import SIGNALS_PER_MIGRATED_BLOCK
from strategy.types import Signal

# V2's insert, as main wrote a signal row before V3 (one row per signal).
V2_INSERT_SIGNAL = (
    "INSERT INTO signals (symbol, ts, scorer, p_up, confidence, data) VALUES (?, ?, ?, ?, ?, ?)"
)
START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


def awkward_signals(count: int) -> list[Signal]:
    """Signals whose JSON is easy to get wrong: offsets, microseconds, naive times, non-ASCII and
    quoted text, NaN, tiny and long floats."""
    paris = timezone(timedelta(hours=1))
    out = []
    for n in range(count):
        ts = START + timedelta(minutes=n)
        if n % 5 == 1:
            ts = ts.astimezone(paris).replace(microsecond=n % 999_999)
        elif n % 5 == 2:
            ts = ts.replace(tzinfo=None)  # naive: the journal takes it as UTC
        p_up = (math.nan, 1e-300, 0.1 + 0.2, 1.0, 0.123456789012345678)[n % 5]
        out.append(
            Signal(
                symbol=("AAPL", "Zürich·Ä", 'Q"uote\\d', "S\u2603")[n % 4],
                ts=ts,
                p_up=p_up,
                confidence=(n % 7) / 7,
                scorer=("rules", "ml")[n % 2],
                reasons=("a\nb", '"x"') if n % 3 else (),
                disagreement=n / 3,
            )
        )
    return out


def v2_rows(signals: list[Signal]) -> list[tuple[object, ...]]:
    """The rows V2 wrote for these signals (journal_rows before V3), ids from 1."""
    return [
        (
            n,
            s.symbol,
            iso_utc(s.ts),
            s.scorer,
            None if math.isnan(s.p_up) else s.p_up,
            s.confidence,
            msgspec.json.encode(s).decode(),
        )
        for n, s in enumerate(signals, start=1)
    ]


def make_v2_journal(path: Path, signals: list[Signal]) -> None:
    con = sqlite3.connect(path)
    for step in MIGRATIONS[:2]:
        con.executescript(str(step))
    con.execute("PRAGMA user_version = 2")
    con.executemany(V2_INSERT_SIGNAL, [row[1:] for row in v2_rows(signals)])
    con.execute("INSERT INTO kv (key, value) VALUES ('cash', '1.5')")
    con.commit()
    con.close()


def as_tuples(rows: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [tuple(r.values()) for r in rows]


def test_open_when_v2_journal_with_signals_then_migrated_and_reads_the_same_rows(tmp_path: Path):
    path = tmp_path / "v2.sqlite"
    signals = awkward_signals(SIGNALS_PER_MIGRATED_BLOCK * 2 + 7)  # three blocks, the last short
    make_v2_journal(path, signals)
    con = sqlite3.connect(path)
    before = con.execute("SELECT * FROM signals ORDER BY id").fetchall()
    con.close()
    assert before == v2_rows(signals)
    with Journal(path, checkpoint_seconds=None) as journal:
        assert journal.schema_version() == SCHEMA_VERSION == 3
        assert as_tuples(journal.rows("signals")) == before
        assert journal.counts()["signals"] == len(signals)
        assert journal.get("cash") == "1.5"
        decoded = [msgspec.json.decode(r["data"]) for r in journal.rows("signals")]  # NaN: null
        journal.record(signals=awkward_signals(3))  # and it keeps writing after the migration
        assert journal.counts()["signals"] == len(signals) + 3
    assert [(d["symbol"], d["reasons"], d["scorer"]) for d in decoded] == [
        (s.symbol, list(s.reasons), s.scorer) for s in signals
    ]
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM signal_blocks").fetchone() == (4,)
    by_scorer = con.execute("SELECT count(*) FROM signals WHERE scorer = 'ml'").fetchone()[0]
    con.close()
    assert by_scorer == sum(s.scorer == "ml" for s in signals) + 1


def test_record_when_v3_then_signals_view_gives_v2_rows(tmp_path: Path):
    """What V3 writes reads as what V2 wrote, row for row: on the order path (grouped by the
    writer) and through record()."""
    signals = awkward_signals(41)
    with Journal(tmp_path / "j.sqlite") as journal:
        for n in range(0, 30, 3):
            journal.record_orders_ahead(signals=signals[n : n + 3], kv={"n": str(n)})
        journal.record(signals=signals[30:])
        rows = as_tuples(journal.rows("signals"))
    expected = v2_rows(signals)
    assert [r[:4] + r[5:] for r in rows] == [r[:4] + r[5:] for r in expected]
    assert [r[4] for r in rows] == [r[4] for r in expected]  # p_up, NULL for NaN


def test_open_when_v2_signal_row_not_json_then_refused_and_journal_unchanged(tmp_path: Path):
    path = tmp_path / "v2.sqlite"
    make_v2_journal(path, awkward_signals(5))
    con = sqlite3.connect(path)
    con.execute("UPDATE signals SET data = '{not json' WHERE id = 4")
    con.commit()
    con.close()
    with pytest.raises(JournalError) as refused:
        Journal(path, checkpoint_seconds=None).open()
    message = str(refused.value)
    assert "\n" not in message
    assert str(path) in message
    assert "corrupt row 4 in table signals" in message
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone() == (2,)
    assert con.execute("SELECT count(*) FROM signals").fetchone() == (5,)
    con.close()
