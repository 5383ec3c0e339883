"""RiskEngine: pre-trade checks and the trading state (ACTIVE / REDUCING / HALTED) behind one entry point.

`check(intent, book, now)` returns a RiskDecision; a rejection is a value with a reason code
(RiskReason) and a human detail. `update(book, now)`, called once per bar batch, watches daily
loss and drawdown and moves the engine to REDUCING or HALTED; HALTED is sticky until an operator
calls `set_state`. Every check is configurable and most can be disabled with `null`.

An order is *position-reducing* when it is against the current position and cannot take the
position through zero even if every open order on its side fills. Such orders pass HALTED and
REDUCING and skip the position/exposure caps, cooldown and min_confidence; the order-level checks
(quantity, notional, price, collar, hours, open orders, rate) still apply to them.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from datetime import datetime, timedelta

from strategy.book import Book, OpenOrderTotals
from strategy.risk_types import (
    RiskConfig as RiskConfig,
)
from strategy.risk_types import (
    TradingStateChange as TradingStateChange,
)
from strategy.trading_hours import TradingHoursCheck
from strategy.types import OrderIntent, OrderType, RiskDecision, Side, TradingState

_RATE_WINDOW = timedelta(seconds=60)
_EPS = 1e-9


class RiskReason(enum.StrEnum):
    """Reason codes of RiskDecision (OK when accepted) and of automatic state changes."""

    OK = "ok"
    MAX_ORDER_QUANTITY = "max_order_quantity"
    MAX_ORDER_NOTIONAL = "max_order_notional"
    MAX_POSITION_QUANTITY = "max_position_quantity"
    MAX_POSITION_NOTIONAL = "max_position_notional"
    MAX_GROSS_EXPOSURE = "max_gross_exposure"
    MAX_OPEN_ORDERS = "max_open_orders"
    ORDER_RATE_LIMIT = "order_rate_limit"
    MAX_DAILY_LOSS = "max_daily_loss"
    MAX_DRAWDOWN = "max_drawdown"
    OUTSIDE_TRADING_HOURS = "outside_trading_hours"
    PRICE_COLLAR = "price_collar"
    MIN_CONFIDENCE = "min_confidence"
    COOLDOWN = "cooldown"
    HALTED = "halted"
    REDUCING = "reducing"
    NO_PRICE = "no_price"
    INVALID_QUANTITY = "invalid_quantity"


class RiskEngine:
    """Pre-trade checks and the trading state; one instance per book, driven by `now` arguments."""

    def __init__(self, *, config: RiskConfig) -> None:
        self._state = TradingState.ACTIVE
        self._state_reason = "start"
        self._accepted: deque[datetime] = deque()
        self._closes: deque[datetime] = deque(maxlen=0)
        self._exits: dict[str, datetime] = {}
        self.config = config
        self._hours: TradingHoursCheck | None = None
        self._cooldown: timedelta | None = None
        self._watching = True
        self.reconfigure(config)

    # ---- control ------------------------------------------------------------------------------
    @property
    def state(self) -> TradingState:
        return self._state

    @property
    def state_reason(self) -> str:
        """Why the engine is in its current state (a reason code or an operator's text)."""
        return self._state_reason

    def reconfigure(self, config: RiskConfig) -> None:
        """Apply new limits; state, the rate window and exit times are kept."""
        self.config = config
        self._hours = (
            TradingHoursCheck(config.trading_hours) if config.trading_hours is not None else None
        )
        self._cooldown = (
            timedelta(seconds=config.cooldown_seconds)
            if config.cooldown_seconds is not None
            else None
        )
        self._closes = deque(self._closes, maxlen=config.cooldown_bars)
        # update() has a limit to watch (reduce_at_daily_loss_fraction needs max_daily_loss).
        self._watching = config.max_daily_loss is not None or config.max_drawdown is not None

    def set_state(
        self, state: TradingState, reason: str, now: datetime
    ) -> TradingStateChange | None:
        """Operator control; returns the change, or None when the engine is already in that state."""
        return self._move(state, reason, now, detail="set_state")

    def note_exit(self, symbol: str, now: datetime) -> None:
        """Record an exit outside the book's fills (the book's last_exit_ts is read as well)."""
        previous = self._exits.get(symbol)
        if previous is None or now > previous:
            self._exits[symbol] = now

    def orders_in_window(self, now: datetime) -> int:
        """Accepted orders counted by the rate limit in the 60 s ending at now."""
        self._expire(now)
        return len(self._accepted)

    # ---- per batch ----------------------------------------------------------------------------
    def update(self, book: Book, now: datetime) -> TradingStateChange | None:
        """Check daily loss and drawdown; move to REDUCING or HALTED on a breach (HALTED is sticky)."""
        closes = self._closes  # _observe(now), written out: this runs once per batch
        if closes.maxlen and (not closes or now > closes[-1]):
            closes.append(now)
        if self._state is TradingState.HALTED or not self._watching:
            return None
        cfg = self.config
        loss = -book.daily_pnl() if cfg.max_daily_loss is not None else 0.0
        if cfg.max_daily_loss is not None and _over(loss, cfg.max_daily_loss):
            detail = f"daily loss {loss:.2f} > max_daily_loss {cfg.max_daily_loss:g}"
            return self._move(TradingState.HALTED, RiskReason.MAX_DAILY_LOSS, now, detail=detail)
        if cfg.max_drawdown is not None:
            drawdown = book.drawdown()
            if _over(drawdown, cfg.max_drawdown):
                detail = f"drawdown {drawdown:.4f} > max_drawdown {cfg.max_drawdown:g}"
                return self._move(TradingState.HALTED, RiskReason.MAX_DRAWDOWN, now, detail=detail)
        fraction = cfg.reduce_at_daily_loss_fraction
        if (
            fraction is not None
            and cfg.max_daily_loss is not None
            and self._state is TradingState.ACTIVE
            and _over(loss, fraction * cfg.max_daily_loss)
        ):
            detail = (
                f"daily loss {loss:.2f} > {fraction:g} of max_daily_loss {cfg.max_daily_loss:g}"
            )
            return self._move(
                TradingState.REDUCING, "reduce_at_daily_loss_fraction", now, detail=detail
            )
        return None

    # ---- the single entry point -----------------------------------------------------------------
    def check(self, intent: OrderIntent, book: Book, now: datetime) -> RiskDecision:
        """Accept or reject one intent; accepted orders count towards the rate limit."""
        self._observe(now)
        if intent.is_cancel:
            return RiskDecision(intent=intent, accepted=True, ts=now)
        cfg = self.config
        quantity = intent.quantity
        if not (quantity > 0 and math.isfinite(quantity)):
            return _reject(
                intent, now, RiskReason.INVALID_QUANTITY, f"quantity {quantity!r} is not > 0"
            )

        symbol = intent.symbol
        position = book.position(symbol)
        worst = (
            position
            + book.open_totals().open_quantity(symbol, intent.side) * intent.side.sign
            + intent.signed_quantity
        )
        reducing = _is_reducing(position, worst, intent.side)

        if not reducing and self._state is not TradingState.ACTIVE:
            code = RiskReason.HALTED if self._state is TradingState.HALTED else RiskReason.REDUCING
            detail = f"trading {self._state} ({self._state_reason}): only cancels and position-reducing orders"
            return _reject(intent, now, code, detail)

        if self._hours is not None and not self._hours.contains(now):
            detail = f"{now.isoformat()} is outside trading hours {self._hours.text}"
            return _reject(intent, now, RiskReason.OUTSIDE_TRADING_HOURS, detail)

        last = book.price(symbol)
        if intent.order_type is OrderType.LIMIT:
            limit = intent.limit_price
            if limit is None or not (limit > 0 and math.isfinite(limit)):
                return _reject(
                    intent, now, RiskReason.NO_PRICE, f"limit order with limit price {limit!r}"
                )
            if cfg.price_collar_bps is not None:
                if last is None:
                    detail = f"no last price for {symbol} to collar the limit {limit:g} against"
                    return _reject(intent, now, RiskReason.NO_PRICE, detail)
                bps = abs(limit - last) / last * 10_000.0
                if _over(bps, cfg.price_collar_bps):
                    detail = f"limit {limit:g} is {bps:.1f} bps from last {last:g} > price_collar_bps {cfg.price_collar_bps:g}"
                    return _reject(intent, now, RiskReason.PRICE_COLLAR, detail)
            price = limit
        elif last is None or not (last > 0 and math.isfinite(last)):
            return _reject(intent, now, RiskReason.NO_PRICE, f"no last price for {symbol}")
        else:
            price = last

        if cfg.max_order_quantity is not None and _over(quantity, cfg.max_order_quantity):
            detail = f"quantity {quantity:g} > max_order_quantity {cfg.max_order_quantity:g}"
            return _reject(intent, now, RiskReason.MAX_ORDER_QUANTITY, detail)
        if cfg.max_order_notional is not None and _over(quantity * price, cfg.max_order_notional):
            detail = (
                f"notional {quantity * price:.2f} > max_order_notional {cfg.max_order_notional:g}"
            )
            return _reject(intent, now, RiskReason.MAX_ORDER_NOTIONAL, detail)
        if cfg.max_open_orders is not None and len(book.open_orders) >= cfg.max_open_orders:
            detail = f"{len(book.open_orders)} open orders, max_open_orders {cfg.max_open_orders}"
            return _reject(intent, now, RiskReason.MAX_OPEN_ORDERS, detail)
        if cfg.max_orders_per_minute is not None:
            self._expire(now)
            if len(self._accepted) >= cfg.max_orders_per_minute:
                detail = f"{len(self._accepted)} orders in the last 60 s, max_orders_per_minute {cfg.max_orders_per_minute}"
                return _reject(intent, now, RiskReason.ORDER_RATE_LIMIT, detail)

        if not reducing:
            rejection = self._check_entry(intent, book, now, worst, price)
            if rejection is not None:
                return rejection

        if cfg.max_orders_per_minute is not None:
            self._accepted.append(now)
        return RiskDecision(intent=intent, accepted=True, ts=now)

    # ---- helpers ------------------------------------------------------------------------------
    def _check_entry(
        self, intent: OrderIntent, book: Book, now: datetime, worst: float, price: float
    ) -> RiskDecision | None:
        """Checks that only apply to orders that may grow a position."""
        cfg = self.config
        if cfg.min_confidence is not None and not intent.confidence >= cfg.min_confidence:
            detail = f"confidence {intent.confidence:g} < min_confidence {cfg.min_confidence:g}"
            return _reject(intent, now, RiskReason.MIN_CONFIDENCE, detail)
        cooling = self._cooldown_detail(intent.symbol, book, now)
        if cooling is not None:
            return _reject(intent, now, RiskReason.COOLDOWN, cooling)
        size = abs(worst)
        if cfg.max_position_quantity is not None and _over(size, cfg.max_position_quantity):
            detail = f"position could reach {worst:g} > max_position_quantity {cfg.max_position_quantity:g}"
            return _reject(intent, now, RiskReason.MAX_POSITION_QUANTITY, detail)
        if cfg.max_position_notional is not None and _over(size * price, cfg.max_position_notional):
            detail = f"position notional could reach {size * price:.2f} > max_position_notional {cfg.max_position_notional:g}"
            return _reject(intent, now, RiskReason.MAX_POSITION_NOTIONAL, detail)
        if cfg.max_gross_exposure is not None:
            gross = worst_gross_exposure(book, intent, price)
            if _over(gross, cfg.max_gross_exposure):
                detail = f"gross exposure could reach {gross:.2f} > max_gross_exposure {cfg.max_gross_exposure:g}"
                return _reject(intent, now, RiskReason.MAX_GROSS_EXPOSURE, detail)
        return None

    def _cooldown_detail(self, symbol: str, book: Book, now: datetime) -> str | None:
        cfg = self.config
        if self._cooldown is None and cfg.cooldown_bars == 0:
            return None
        exit_ts = book.last_exit_ts.get(symbol)
        noted = self._exits.get(symbol)
        if noted is not None and (exit_ts is None or noted > exit_ts):
            exit_ts = noted
        if exit_ts is None:
            return None
        if self._cooldown is not None and now - exit_ts < self._cooldown:
            return f"{(now - exit_ts).total_seconds():g} s since the exit at {exit_ts.isoformat()}, cooldown_seconds {cfg.cooldown_seconds:g}"
        closes = self._closes
        if cfg.cooldown_bars and (len(closes) < cfg.cooldown_bars or closes[0] <= exit_ts):
            since = sum(1 for ts in closes if ts > exit_ts)
            return f"{since} bars since the exit at {exit_ts.isoformat()}, cooldown_bars {cfg.cooldown_bars}"
        return None

    def _observe(self, now: datetime) -> None:
        """Count distinct batch times; the cooldown in bars is measured in them."""
        closes = self._closes
        if closes.maxlen and (not closes or now > closes[-1]):
            closes.append(now)

    def _expire(self, now: datetime) -> None:
        accepted = self._accepted
        horizon = now - _RATE_WINDOW
        while accepted and accepted[0] <= horizon:
            accepted.popleft()

    def _move(
        self, state: TradingState, reason: str, now: datetime, *, detail: str
    ) -> TradingStateChange | None:
        if state is self._state:
            return None
        change = TradingStateChange(
            previous=self._state, current=state, reason=str(reason), ts=now, detail=detail
        )
        self._state = state
        self._state_reason = str(reason)
        return change


def worst_gross_exposure(book: Book, intent: OrderIntent, price: float) -> float:
    """Gross exposure if the intent and every open order on the worse side of each symbol filled.

    Per symbol the worse side is max(|position + open buys|, |position - open sells|), valued at
    the last price (the intent's own symbol at `price`). Book.gross_exposure() ignores open orders.
    The other symbols' terms are summed once per book state (OpenOrderTotals.exposure), so one
    intent costs O(1), not a scan of every open order; the sum's float rounding may differ from
    a scan's in the last bits (decisions only within 1e-9 of the limit, where _over tolerates).
    """
    totals = book.open_totals()
    terms = _exposure_terms(book, totals)
    symbol = intent.symbol
    others = totals.exposure_sum - terms.get(symbol, 0.0)
    buys = totals.buys.get(symbol, 0.0)
    sells = totals.sells.get(symbol, 0.0)
    if intent.side is Side.BUY:
        buys += intent.quantity
    else:
        sells += intent.quantity
    pos = book.positions.get(symbol)
    quantity = pos.quantity if pos is not None else 0.0
    own = max(abs(quantity + buys), abs(quantity - sells)) * price
    if pos is not None:
        own -= abs(book.market_value(symbol))
    return book.gross_exposure() + others + own


def _exposure_terms(book: Book, totals: OpenOrderTotals) -> dict[str, float]:
    """What each symbol with open orders adds to the held gross: its worse side at its mark, less
    its held market value; computed once per book state, then per symbol whose orders changed."""
    terms = totals.exposure
    if terms is None:
        terms = totals.exposure = {}
        totals.stale = set(totals.buys) | set(totals.sells)
        totals.exposure_sum = 0.0
    if totals.stale:
        prices, positions = book.last_prices, book.positions
        for symbol in totals.stale:
            pos = positions.get(symbol)
            if pos is not None:
                quantity = pos.quantity
                mark = prices.get(symbol, pos.average_price)
            else:
                quantity = 0.0
                mark = prices.get(symbol, totals.limits.get(symbol, 0.0))
            buys = totals.buys.get(symbol, 0.0)
            sells = totals.sells.get(symbol, 0.0)
            term = max(abs(quantity + buys), abs(quantity - sells)) * mark
            if pos is not None:
                term -= abs(book.market_value(symbol))
            totals.exposure_sum += term - terms.get(symbol, 0.0)
            terms[symbol] = term
        totals.stale = set()
    return terms


def _is_reducing(position: float, worst: float, side: Side) -> bool:
    """True when the order is against the position and cannot carry it through zero."""
    if position > 0:
        return side is Side.SELL and worst >= -_EPS
    if position < 0:
        return side is Side.BUY and worst <= _EPS
    return False


def _over(value: float, limit: float) -> bool:
    """value > limit, tolerating float noise so a value exactly at the limit passes."""
    return not value <= limit + _EPS * max(1.0, abs(limit))


def _reject(intent: OrderIntent, now: datetime, reason: RiskReason, detail: str) -> RiskDecision:
    return RiskDecision(intent=intent, accepted=False, reason=reason.value, detail=detail, ts=now)
