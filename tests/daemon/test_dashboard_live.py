"""LiveHub (the dashboard's live view) and the vendored chart library, called directly."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from daemon.api.dashboard import ATTRIBUTION_STYLE_SHA256, CSP, VENDORED_FILE, VENDORED_SHA256
from daemon.api.live import LiveHub
from daemon.web import STATIC, VENDOR
from strategy.types import Bar

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def bar(symbol: str, minute: int, close: float = 100.0) -> Bar:
    ts = T0 + timedelta(minutes=minute)
    return Bar(symbol=symbol, ts=ts, open=close, high=close + 1, low=close - 1, close=close,
               volume=10.0)  # fmt: skip


def drain(stream: object) -> list[tuple[str, dict]]:
    queue = stream.queue  # type: ignore[attr-defined]
    out = []
    while not queue.empty():
        kind, data = queue.get_nowait()
        out.append((kind, json.loads(data) if data else {}))
    return out


def test_publish_when_one_stream_is_full_then_it_is_dropped_and_the_others_get_the_event() -> None:
    async def run() -> None:
        async with LiveHub(queue_size=3) as hub:
            slow, fast = hub.open_stream(), hub.open_stream()
            assert slow is not None
            assert fast is not None
            for i in range(3):
                hub.publish("order", {"n": i})
                drain(fast)
            with structlog.testing.capture_logs() as logs:
                hub.publish("order", {"n": 3})  # slow has 3 queued: full
            assert slow.dropped
            assert not fast.dropped
            assert [e["event"] for e in logs] == ["dashboard.client_dropped"]
            assert hub.stats.dropped_clients == 1
            assert hub.stats.clients == 1
            assert drain(fast) == [("order", {"n": 3})]
            # The dropped stream ends at once: its queue holds only the end marker.
            assert [item async for item in slow.items(status_seconds=5)] == []

    asyncio.run(run())


def test_open_stream_when_max_clients_connected_then_refused_until_one_closes() -> None:
    async def run() -> None:
        async with LiveHub(max_clients=2) as hub:
            first, second = hub.open_stream(), hub.open_stream()
            assert first is not None
            assert second is not None
            assert hub.open_stream() is None
            assert hub.stats.refused_clients == 1
            hub.close_stream(first)
            assert hub.open_stream() is not None

    asyncio.run(run())


def test_on_event_when_logged_from_a_worker_thread_then_reaches_streams_on_the_loop() -> None:
    async def run() -> None:
        async with LiveHub() as hub:
            stream = hub.open_stream()
            assert stream is not None
            hub.on_event("signal.scored", {"symbol": "A"})  # not a dashboard event
            worker = threading.Thread(
                target=hub.on_event,
                args=("order.filled", {"symbol": "A", "price": 101.5, "_record": object()}),
            )
            worker.start()
            worker.join()
            item = await anext(stream.items(status_seconds=5))
            assert item is not None
            kind, data = item
            assert kind == "fill"
            assert json.loads(data) == {"symbol": "A", "price": 101.5, "event": "order.filled"}
            assert stream.queue.empty()

    asyncio.run(run())


def test_on_event_when_drift_detected_then_kept_as_last_drift_and_sent_as_notice() -> None:
    async def run() -> None:
        async with LiveHub() as hub:
            hub.on_event("model.drift_detected", {"max_psi": 0.2})  # kept with nobody watching
            assert hub.last_drift is not None
            assert hub.last_drift["max_psi"] == 0.2
            hub.on_event("order.submitted", {"symbol": "A"})  # nobody watching: dropped
            assert hub.stats.events == 0
            stream = hub.open_stream()
            hub.on_event("model.drift_detected", {"max_psi": 0.4, "drifted": ["rsi_14"]})
            assert hub.last_drift["max_psi"] == 0.4
            assert [kind for kind, _ in drain(stream)] == ["notice"]

    asyncio.run(run())


def test_on_batch_when_more_bars_than_the_ring_then_keeps_the_newest_ascending() -> None:
    async def run() -> None:
        async with LiveHub(bars_per_symbol=5, equity_points=3) as hub:
            stream = hub.open_stream()
            for minute in range(8):
                hub.on_batch([bar("A", minute), bar("B", minute)], equity=1000.0 + minute)
            hub.on_batch([bar("A", 2)], equity=1.0)  # a replayed bar: not appended
            times = [b["time"] for b in hub.bars("A", 100)]
            assert times == [int((T0 + timedelta(minutes=m)).timestamp()) for m in range(3, 8)]
            assert len(hub.bars("B", 2)) == 2
            assert hub.symbols() == ["A", "B"]
            assert [v for _, v in hub.equity(10)] == [1005.0, 1006.0, 1007.0]
            events = drain(stream)
            assert len(events) == 9
            assert {k for k, _ in events} == {"bar"}
            assert events[-2][1]["equity"] == 1007.0
            assert [b["symbol"] for b in events[-2][1]["bars"]] == ["A", "B"]

    asyncio.run(run())


def test_exit_when_streams_open_then_each_ends_new_ones_are_refused_and_the_sink_is_removed() -> (
    None
):
    from daemon.log_setup import event_sinks

    async def run() -> None:
        hub = LiveHub()
        async with hub:
            stream = hub.open_stream()
            assert hub.on_event in event_sinks()
        assert hub.on_event not in event_sinks()
        assert [item async for item in stream.items(status_seconds=5)] == []
        assert hub.open_stream() is None  # a browser reconnecting while the daemon stops

    asyncio.run(run())


def test_vendored_chart_library_when_read_then_matches_its_recorded_sha256_and_version() -> None:
    data = (VENDOR / VENDORED_FILE).read_bytes()
    assert hashlib.sha256(data).hexdigest() == VENDORED_SHA256
    assert b"Lightweight Charts\xe2\x84\xa2 v5.2.1" in data[:300]
    notes = (VENDOR / "VENDORED.md").read_text()
    assert VENDORED_SHA256 in notes
    assert "5.2.1" in notes
    assert "Apache License" in (VENDOR / "LICENSE-lightweight-charts").read_text()[:200]


def test_csp_when_library_adds_its_attribution_style_then_exactly_that_style_is_allowed() -> None:
    text = (VENDOR / VENDORED_FILE).read_text()
    found = re.search(r'createElement\("style"\),this\.\w+\.innerText=("(?:[^"\\]|\\.)*")', text)
    assert found is not None, "the library no longer adds a <style>: drop its hash from the CSP"
    style = json.loads(found.group(1))
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert digest == ATTRIBUTION_STYLE_SHA256, f"set ATTRIBUTION_STYLE_SHA256 = {digest!r}"
    assert f"'sha256-{digest}'" in CSP
    assert "unsafe-inline" not in CSP
    assert "unsafe-eval" not in CSP


def test_page_when_read_then_has_no_inline_script_or_style_and_loads_only_local_assets() -> None:
    page = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "inline <script>"
    assert "<style" not in page
    assert " style=" not in page
    assert " on" + "click=" not in page
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources
    assert all(s.startswith("/") or s == "data:," for s in sources), sources


def test_seed_when_the_store_holds_warm_up_bars_then_the_charts_start_with_them() -> None:
    from strategy.bars import BarStore, BarStoreConfig

    store = BarStore(config=BarStoreConfig(window=4, bar_seconds=60))
    for minute in range(6):
        store.add(bar("A", minute, close=100.0 + minute))
    store.add(bar("B", 0))  # fewer bars than a window: no chart yet
    hub = LiveHub(bars_per_symbol=3)
    hub.seed(store)
    assert [b["close"] for b in hub.bars("A", 10)] == [103.0, 104.0, 105.0]
    assert hub.bars("B", 10) == []


def test_items_when_events_never_pause_then_status_snapshots_still_come_between_them() -> None:
    async def run() -> list[object]:
        async with LiveHub() as hub:
            stream = hub.open_stream()
            for i in range(3):
                hub.publish("bar", {"n": i})
            out: list[object] = []
            async for item in stream.items(status_seconds=0.0):  # a snapshot always due
                out.append(item if item is None else json.loads(item[1])["n"])
                if len(out) >= 6:
                    break
            return out

    out = asyncio.run(run())
    assert [x for x in out if x is not None] == [0, 1, 2]
    assert out.count(None) == 3


def test_journal_reader_when_journal_missing_or_not_sqlite_then_input_error_names_the_file(
    tmp_path: Path,
) -> None:
    import pytest

    from daemon.api.journal_reader import JournalReader
    from daemon.errors import InputError

    missing = tmp_path / "none.sqlite"
    with pytest.raises(
        InputError, match=r"none\.sqlite: cannot be opened|none\.sqlite: read failed"
    ):
        asyncio.run(JournalReader(missing).orders(limit=5))
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(InputError, match=r"garbage\.sqlite: read failed"):
        asyncio.run(JournalReader(garbage).rejections())


def test_journal_reader_when_orders_journaled_then_newest_first_limited_and_by_symbol(
    tmp_path: Path,
) -> None:
    from daemon.api.journal_reader import JournalReader
    from daemon.journal import Journal
    from strategy.types import Order, OrderStatus, OrderType, Side

    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal:
        orders = [
            Order(client_order_id=f"T-{i}", symbol="AB"[i % 2], side=Side.BUY, quantity=1.0,
                  order_type=OrderType.MARKET, status=OrderStatus.SUBMITTED, reason="test",
                  created_ts=T0)
            for i in range(5)
        ]  # fmt: skip
        journal.record(orders=orders)
    reader = JournalReader(path)
    newest = asyncio.run(reader.orders(limit=3))
    assert [o["client_order_id"] for o in newest] == ["T-4", "T-3", "T-2"]
    only_b = asyncio.run(reader.orders(limit=10, symbol="B"))
    assert [o["client_order_id"] for o in only_b] == ["T-3", "T-1"]
