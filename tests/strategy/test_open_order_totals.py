"""OpenOrderTotals (issue 16): the strategy's pending, risk's open quantities and worst-case gross
exposure from per-batch sums give the same decisions as the scans of every open order they replace.

The scans are kept here, as the reference: random books go through a batch of risk checks once with
them and once with the sums, and every decision (accepted, reason, detail) must be the same. The
reference run patches the scans into the Python source of the core (strategy.native.pure_module), so
it holds when the core is compiled, whose calls a patch of the compiled modules would not reach.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from strategy.bars import BarStore, BarStoreConfig
from strategy.book import Book
from strategy.kernel import BatchDecision, TradingKernel
from strategy.native import pure_module
from strategy.risk import RiskConfig, RiskEngine, worst_gross_exposure
from strategy.target_strategy import StrategyConfig, TargetStrategy
from strategy.types import Bar, Order, OrderEvent, OrderIntent, OrderStatus, OrderType, Side
from tests.strategy.test_risk import fill

T0 = datetime(2024, 3, 6, 15, 0, tzinfo=UTC)  # a Wednesday
PURE_BOOK, PURE_RISK, PURE_KERNEL = (
    pure_module(f"strategy.{name}") for name in ("book", "risk", "kernel")
)
SYMBOLS = [f"S{i}" for i in range(12)]


# ---- the scans the sums replace (the code before issue 16) -------------------------------------
def scan_pending(book: Book, symbol: str) -> float:
    return sum(o.signed_remaining for o in book.open_orders.values() if o.symbol == symbol)


def scan_open_quantity(book: Book, symbol: str, side: Side) -> float:
    total = 0.0
    for order in book.open_orders.values():
        if order.symbol == symbol and order.side is side:
            total += order.remaining
    return total


def scan_worst_gross_exposure(book: Book, intent: OrderIntent, price: float) -> float:
    buys: dict[str, float] = {}
    sells: dict[str, float] = {}
    fallback: dict[str, float] = {}
    for order in book.open_orders.values():
        side = buys if order.side is Side.BUY else sells
        side[order.symbol] = side.get(order.symbol, 0.0) + order.remaining
        if order.limit_price is not None:
            fallback[order.symbol] = order.limit_price
    side = buys if intent.side is Side.BUY else sells
    side[intent.symbol] = side.get(intent.symbol, 0.0) + intent.quantity
    prices = book.last_prices
    positions = book.positions
    total = book.gross_exposure()
    for symbol in buys.keys() | sells.keys():
        pos = positions.get(symbol)
        quantity = pos.quantity if pos is not None else 0.0
        if pos is not None:
            total -= abs(book.market_value(symbol))
        if symbol == intent.symbol:
            mark = price
        elif pos is not None:
            mark = prices.get(symbol, pos.average_price)
        else:
            mark = prices.get(symbol, fallback.get(symbol, 0.0))
        worse = max(abs(quantity + buys.get(symbol, 0.0)), abs(quantity - sells.get(symbol, 0.0)))
        total += worse * mark
    return total


class ScanTotals:
    """Stands in for OpenOrderTotals in the reference run: every read is a scan."""

    def __init__(self, book: Book) -> None:
        self.book = book

    def open_quantity(self, symbol: str, side: Side) -> float:
        return scan_open_quantity(self.book, symbol, side)


def scan_totals(book: Book) -> ScanTotals:
    return ScanTotals(book)


# ---- random books ----------------------------------------------------------------------------------
def peek(book: Book, rng: random.Random) -> None:
    """Read the sums now and then while the book changes, so their caches must follow it."""
    if rng.random() < 0.5:
        symbol = rng.choice(SYMBOLS)
        book.pending(symbol)
        pure = isinstance(book, PURE_BOOK.Book)
        (PURE_RISK.worst_gross_exposure if pure else worst_gross_exposure)(
            book,
            OrderIntent(symbol=symbol, ts=T0, side=Side.BUY, quantity=1.0),
            book.price(symbol) or 1.0,
        )


def random_mark(book: Book, rng: random.Random, symbol: str) -> None:
    price = round(rng.uniform(5, 500), 2)
    book.mark(Bar(symbol=symbol, ts=T0, open=price, high=price, low=price, close=price, volume=1e6))


def random_book(rng: random.Random, ids: Iterator[int], *, book_type: type[Book] = Book) -> Book:
    """Positions, marks (some symbols never priced), open and partly filled orders on both sides,
    with the sums read in between."""
    book = book_type(starting_cash=1_000_000.0)
    for symbol in SYMBOLS:
        if rng.random() < 0.8:
            random_mark(book, rng, symbol)
            peek(book, rng)
        if rng.random() < 0.5:
            side = rng.choice([Side.BUY, Side.SELL])
            quantity = float(rng.randint(1, 400))
            fill(book, symbol, side, quantity, price=round(rng.uniform(5, 500), 2))
            peek(book, rng)
    for _ in range(rng.randint(0, 30)):
        symbol = rng.choice(SYMBOLS)
        limit = round(rng.uniform(5, 500), 2) if rng.random() < 0.4 else None
        order = Order(
            client_order_id=f"O{next(ids)}",
            symbol=symbol,
            side=rng.choice([Side.BUY, Side.SELL]),
            quantity=float(rng.randint(1, 300)),
            created_ts=T0,
            limit_price=limit,
            order_type=OrderType.LIMIT if limit is not None else OrderType.MARKET,
        )
        book.add_order(order)
        peek(book, rng)
        if rng.random() < 0.2:  # the price moves under open orders
            random_mark(book, rng, symbol)
            peek(book, rng)
        if rng.random() < 0.3:  # partly filled, or closed: the sums must follow
            part = float(rng.randint(1, int(order.quantity)))
            coid = order.client_order_id
            fill(book, symbol, order.side, part, price=limit or 50.0, client_order_id=coid)
            status = OrderStatus.FILLED if part >= order.quantity else OrderStatus.PARTIALLY_FILLED
            book.apply_order_event(
                OrderEvent(
                    client_order_id=order.client_order_id,
                    ts=T0,
                    status=status,
                    filled_quantity=part,
                )
            )
            peek(book, rng)
    return book


def random_intents(rng: random.Random, n: int) -> list[OrderIntent]:
    intents = []
    for _ in range(n):
        limit = round(rng.uniform(5, 500), 2) if rng.random() < 0.2 else None
        intents.append(
            OrderIntent(
                symbol=rng.choice(SYMBOLS),
                ts=T0,
                side=rng.choice([Side.BUY, Side.SELL]),
                quantity=float(rng.randint(1, 300)),
                confidence=rng.random(),
                limit_price=limit,
                order_type=OrderType.LIMIT if limit is not None else OrderType.MARKET,
            )
        )
    return intents


def run_batch(
    book: Book, intents: list[OrderIntent], limit: float, *, pure: bool = False
) -> BatchDecision:
    """One batch of risk checks, accepted orders entering the book as they do in the daemon
    (through the Python source of the kernel and risk engine when pure)."""
    ids = itertools.count()
    engine_type, kernel_type = (
        (PURE_RISK.RiskEngine, PURE_KERNEL.TradingKernel) if pure else (RiskEngine, TradingKernel)
    )
    engine = engine_type(
        config=RiskConfig(
            max_gross_exposure=limit,
            max_position_notional=60_000.0,
            max_order_notional=None,
            max_daily_loss=None,
            max_drawdown=None,
            price_collar_bps=None,
            max_orders_per_minute=None,
            max_open_orders=None,
        )
    )
    kernel = kernel_type(
        store=BarStore(config=BarStoreConfig()),  # check() reads only risk and the book
        strategy=TargetStrategy(config=StrategyConfig()),
        risk=engine,
        book=book,
        next_order_id=lambda: f"N{next(ids)}",
    )
    return kernel.check(intents, T0 + timedelta(minutes=1))


def outcomes(decision: BatchDecision) -> list[tuple[Any, ...]]:
    return [(d.intent, d.accepted, d.reason, d.detail) for d in decision.decisions]


# ---- tests -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(60))
def test_sums_when_random_book_then_pending_and_open_quantities_equal_the_scans(seed):
    rng = random.Random(seed)
    book = random_book(rng, itertools.count())
    for symbol in SYMBOLS:
        assert book.pending(symbol) == scan_pending(book, symbol)
        for side in (Side.BUY, Side.SELL):
            got = book.open_totals().open_quantity(symbol, side)
            assert got == scan_open_quantity(book, symbol, side)
    for i in random_intents(rng, 20):
        price = i.limit_price or book.price(i.symbol) or 10.0
        want = scan_worst_gross_exposure(book, i, price)
        assert worst_gross_exposure(book, i, price) == pytest.approx(want, rel=1e-12, abs=1e-6)


@pytest.mark.parametrize("seed", range(200))
def test_check_when_random_books_and_intents_then_decisions_equal_the_scans(seed, monkeypatch):
    rng = random.Random(1000 + seed)
    state = rng.getstate()
    book = random_book(rng, itertools.count())
    intents = random_intents(rng, 25)
    # A limit near the book's worst case, so that both outcomes of the gross check happen.
    limit = book.gross_exposure() + rng.uniform(0, 80_000) + 1.0
    new = run_batch(book, intents, limit)

    rng.setstate(state)
    reference = random_book(rng, itertools.count(), book_type=PURE_BOOK.Book)
    assert random_intents(rng, 25) == intents
    with monkeypatch.context() as m:
        m.setattr(PURE_RISK, "worst_gross_exposure", scan_worst_gross_exposure)
        m.setattr(PURE_BOOK.Book, "pending", scan_pending)
        m.setattr(PURE_BOOK.Book, "open_totals", scan_totals)
        old = run_batch(reference, intents, limit, pure=True)

    assert outcomes(new) == outcomes(old)
    assert [o.client_order_id for o in new.orders] == [o.client_order_id for o in old.orders]
    assert list(book.open_orders) == list(reference.open_orders)


def test_check_when_many_books_then_both_gross_outcomes_were_compared():
    """The comparison above is only worth something if the gross check both passes and fails."""
    reasons: set[str] = set()
    for seed in range(200):
        rng = random.Random(1000 + seed)
        book = random_book(rng, itertools.count())
        intents = random_intents(rng, 25)
        limit = book.gross_exposure() + rng.uniform(0, 80_000) + 1.0
        reasons |= {d.reason for d in run_batch(book, intents, limit).decisions}
    assert {"ok", "max_gross_exposure", "max_position_notional"} <= reasons


def test_pending_when_orders_added_filled_and_closed_then_follows_the_book():
    book = Book(starting_cash=0.0)
    order = Order(
        client_order_id="A",
        symbol="S0",
        side=Side.BUY,
        quantity=10.0,
        created_ts=T0,
        order_type=OrderType.MARKET,
    )
    assert book.pending("S0") == 0
    book.add_order(order)
    assert book.pending("S0") == 10.0
    book.add_order(
        Order(
            client_order_id="B",
            symbol="S0",
            side=Side.SELL,
            quantity=3.0,
            order_type=OrderType.MARKET,
            created_ts=T0,
        )
    )
    assert book.pending("S0") == 7.0
    fill(book, "S0", Side.BUY, 4.0, price=1.0, client_order_id="A")
    assert book.pending("S0") == 3.0
    book.apply_order_event(OrderEvent(client_order_id="B", ts=T0, status=OrderStatus.CANCELLED))
    assert book.pending("S0") == 6.0
