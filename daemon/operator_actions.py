"""What an operator's command does to the running pipeline (pause, resume, flatten, trading state),
and what `/status` shows of it; daemon/app.py's Daemon hands the DaemonControl calls on to these."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog

from daemon.errors import InputError
from daemon.model.slot import describe_scorer
from daemon.pipeline import Pipeline
from daemon.reload_plan import ReloadReport
from strategy.types import OrderIntent, Side, TradingState

log = structlog.get_logger("daemon.operator_actions")

PAUSED_KEY = "paused"  # journal kv: "true" while an operator pause holds
PAUSED_REASON_KEY = "paused_reason"


def pause(p: Pipeline, reason: str) -> None:
    """Stop opening orders; journaled first, so a restart comes back paused."""
    p.journal.record(kv={PAUSED_KEY: "true", PAUSED_REASON_KEY: reason})
    p.paused = True
    log.warning("daemon.paused", reason=reason)


def resume(p: Pipeline, reason: str) -> None:
    p.journal.record(kv={PAUSED_KEY: "false", PAUSED_REASON_KEY: reason})
    p.paused = False
    log.info("daemon.resumed", reason=reason)


async def flatten(p: Pipeline, symbol: str | None, reason: str) -> int:
    """Cancel working orders and close positions, through risk and the journal like any order."""
    now = p.stats.last_bar_ts or datetime.now(UTC)
    symbols = (
        [symbol]
        if symbol is not None
        else [s for s, pos in p.book.positions.items() if pos.quantity]
    )
    if symbol is not None and symbol not in p.book.positions and symbol not in p.book.last_prices:
        msg = f"unknown symbol {symbol!r}"
        raise InputError(msg)
    intents: list[OrderIntent] = []
    for coid, order in list(p.book.open_orders.items()):
        if order.symbol in symbols or symbol is None:
            intents.append(
                OrderIntent(
                    symbol=order.symbol,
                    ts=now,
                    side=order.side,
                    quantity=0.0,
                    is_cancel=True,
                    cancel_client_order_id=coid,
                    reason="flatten",
                )
            )
    for s in symbols:
        qty = p.book.position(s)
        if qty:
            intents.append(
                OrderIntent(
                    symbol=s,
                    ts=now,
                    side=Side.SELL if qty > 0 else Side.BUY,
                    quantity=abs(qty),
                    reason=f"flatten:{reason}",
                    confidence=1.0,
                )
            )
    orders = await p.submit_intents(intents, now)
    log.warning("daemon.flattened", symbol=symbol, orders=len(orders), reason=reason)
    return len(orders)


def set_trading_state(p: Pipeline, state: TradingState, reason: str) -> None:
    change = p.risk.set_state(state, reason, p.stats.last_bar_ts or datetime.now(UTC))
    if change is not None:
        p.journal.record(
            state_changes=[change],
            kv={"trading_state": str(state), "trading_state_reason": reason},
        )
        log.warning(
            "trading_state.changed",
            previous=str(change.previous),
            current=str(change.current),
            reason=reason,
        )


def status(
    p: Pipeline,
    *,
    mode: str,
    account: str,
    bundle_id: str | None,
    tasks_down: dict[str, str],
    last_reload: ReloadReport | None,
    native: dict[str, object],
) -> dict[str, Any]:
    """`/status`: trading state, model, money, positions, open orders, counts, the last reload,
    and whether the per-bar core running is the compiled one (`native`, as `core.native` logs)."""
    book = p.book
    return {
        "mode": mode,
        "account": account,
        "trading_state": str(p.risk.state),
        "paused": p.paused,
        "scorer": p.scorer.name,
        "bundle_id": bundle_id,
        "signal": describe_scorer(p.scorer),
        "shadow": p.shadow.stats.summary() if p.shadow is not None else None,
        "cash": round(book.cash, 2),
        "equity": round(book.equity(), 2),
        "pnl_today": round(book.daily_pnl(), 2),
        "drawdown": round(book.drawdown(), 6),
        "positions": {
            s: {
                "quantity": pos.quantity,
                "average_price": pos.average_price,
                "realized_pnl": round(pos.realized_pnl, 2),
            }
            for s, pos in book.positions.items()
            if pos.quantity
        },
        "open_orders": [
            {
                "client_order_id": o.client_order_id,
                "symbol": o.symbol,
                "side": str(o.side),
                "quantity": o.quantity,
                "filled_quantity": o.filled_quantity,
                "status": str(o.status),
            }
            for o in book.open_orders.values()
        ],
        "last_bar_ts": p.stats.last_bar_ts.isoformat() if p.stats.last_bar_ts else None,
        "bars": p.stats.bars,
        "orders_submitted": p.stats.orders_submitted,
        "fills": p.stats.fills,
        "tasks_down": tasks_down,
        "last_reload": msgspec.to_builtins(last_reload) if last_reload else None,
        "native": native,
    }
