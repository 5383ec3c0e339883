"""A fake IB Gateway: an asyncio TCP server on loopback speaking the TWS API at SERVER_VERSION.

It keeps broker state (orders, executions, positions) across client sessions and restarts, runs a
virtual market clock that tests advance explicitly, and can be scripted to misbehave: refuse or
drop connections, report 1100/1101/1102, answer 326 for busy client ids, 162 for pacing, delay
historical answers, freeze a symbol's stream, reject, partially fill or hold orders, delay
acknowledgements and cancel confirmations, and restart like the nightly Gateway reset. Every order
records the market clock when it arrived (placed_at), so tests can tell how old its bar was.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from tests.ibgateway.market import Market, MarketBar, align
from tests.ibgateway.protocol import (
    SERVER_VERSION,
    UNSET_DOUBLE,
    UNSET_INTEGER,
    In,
    Out,
    Reader,
    encode,
    ib_time,
    parse_version_range,
    split_frames,
)

FillMode = Literal["immediate", "partial", "reject", "hold"]


@dataclass(frozen=True)
class GatewayContract:
    """A contract the gateway knows; requests are matched against these."""

    symbol: str
    sec_type: str
    con_id: int
    exchange: str = "SMART"
    primary_exchange: str = ""
    currency: str = "USD"
    local_symbol: str = ""
    trading_class: str = ""
    multiplier: str = ""
    last_trade_date: str = ""
    min_tick: float = 0.01
    long_name: str = ""
    # Contract details' session fields, IB's text format (empty: the gateway lists no hours).
    time_zone: str = "UTC"
    trading_hours: str = ""
    liquid_hours: str = ""

    @property
    def local(self) -> str:
        return self.local_symbol or self.symbol

    def wire_fields(self) -> tuple[object, ...]:
        """The contract as position, open-order and execution messages carry it (strike 0, no right)."""
        return (
            self.con_id,
            self.symbol,
            self.sec_type,
            self.last_trade_date,
            0.0,
            "",
            self.multiplier,
            self.exchange,
            self.currency,
            self.local,
            self.trading_class,
        )


DEFAULT_CONTRACTS: tuple[GatewayContract, ...] = (
    GatewayContract(
        symbol="AAPL",
        sec_type="STK",
        con_id=265598,
        primary_exchange="NASDAQ",
        trading_class="NMS",
        long_name="APPLE INC",
    ),
    GatewayContract(
        symbol="MSFT",
        sec_type="STK",
        con_id=272093,
        primary_exchange="NASDAQ",
        trading_class="NMS",
        long_name="MICROSOFT CORP",
    ),
    GatewayContract(
        symbol="SPY",
        sec_type="STK",
        con_id=756733,
        primary_exchange="ARCA",
        trading_class="SPY",
        long_name="SPDR S&P 500 ETF TRUST",
    ),
    GatewayContract(
        symbol="ES",
        sec_type="FUT",
        con_id=495512563,
        exchange="CME",
        currency="USD",
        local_symbol="ESZ5",
        trading_class="ES",
        multiplier="50",
        last_trade_date="20251219",
        min_tick=0.25,
        long_name="E-mini S&P 500",
    ),
    GatewayContract(
        symbol="EUR",
        sec_type="CASH",
        con_id=12087792,
        exchange="IDEALPRO",
        currency="USD",
        local_symbol="EUR.USD",
        trading_class="EUR.USD",
        min_tick=0.00005,
        long_name="European Monetary Union Euro",
    ),
)


@dataclass
class Scenario:
    """What the gateway does next; tests change these fields between steps."""

    fill: FillMode = "immediate"
    partial_fractions: tuple[float, ...] = (0.4, 0.6)
    ack_delay: float = 0.0
    reject_reason: str = "Order rejected - reason:YOUR ORDER IS NOT ACCEPTED. INSUFFICIENT EQUITY"
    client_ids_in_use: set[int] = field(default_factory=set)
    pacing_violations: int = 0
    history_delay: float = 0.0  # seconds before a historical data request is answered
    cancel_delay: float = 0.0  # seconds before a cancel is confirmed (Cancelled status)
    commission_delay: float = 0.0  # seconds between an execution's status and its commission
    commission_per_share: float = 0.005
    min_commission: float = 1.0


@dataclass
class GatewayOrder:
    perm_id: int
    order_id: int
    client_id: int
    contract: GatewayContract
    action: str
    quantity: float
    order_type: str
    limit_price: float | None
    aux_price: float | None
    tif: str
    order_ref: str
    account: str
    parent_id: int
    oca_group: str
    transmit: bool
    placed_at: datetime | None = None  # the market clock when the order arrived
    status: str = "PendingSubmit"
    filled: float = 0.0
    avg_price: float = 0.0
    last_fill_price: float = 0.0

    @property
    def remaining(self) -> float:
        return max(self.quantity - self.filled, 0.0)

    @property
    def done(self) -> bool:
        return self.status in ("Filled", "Cancelled", "Inactive", "ApiCancelled")


@dataclass
class GatewayExecution:
    exec_id: str
    order: GatewayOrder
    shares: float
    price: float
    cum_qty: float
    avg_price: float
    time: datetime
    commission: float


@dataclass
class _HistorySub:
    req_id: int
    contract: GatewayContract
    bar_seconds: int
    current_start: datetime
    format_date: int


@dataclass
class _RealtimeSub:
    req_id: int
    contract: GatewayContract
    next_start: datetime


_BAR_SIZES = {
    "sec": 1,
    "secs": 1,
    "min": 60,
    "mins": 60,
    "hour": 3600,
    "hours": 3600,
    "day": 86400,
    "days": 86400,
    "week": 604800,
    "month": 2592000,
}
_DURATION_UNITS = {"S": 1, "D": 86400, "W": 604800, "M": 2592000, "Y": 31536000}


def bar_size_seconds(text: str) -> int:
    """'5 mins' -> 300."""
    count, _, unit = text.strip().partition(" ")
    if unit not in _BAR_SIZES:
        msg = f"unknown bar size {text!r}"
        raise ValueError(msg)
    return int(count) * _BAR_SIZES[unit]


def duration_seconds(text: str) -> int:
    """'2 D' -> 172800."""
    count, _, unit = text.strip().partition(" ")
    if unit not in _DURATION_UNITS:
        msg = f"unknown duration {text!r}"
        raise ValueError(msg)
    return int(count) * _DURATION_UNITS[unit]


def parse_end(text: str) -> datetime | None:
    """An endDateTime from a request: '' (now), 'YYYYMMDD HH:MM:SS UTC' or 'YYYYMMDD-HH:MM:SS'."""
    text = text.strip()
    if not text:
        return None
    m = re.fullmatch(r"(\d{8})[ -](\d\d:\d\d:\d\d)(?: (\S+))?", text)
    if not m or (m.group(3) not in (None, "UTC", "GMT", "Etc/UTC")):
        msg = f"unsupported endDateTime {text!r}"
        raise ValueError(msg)
    return datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H:%M:%S").replace(tzinfo=UTC)


class Session:
    """One client connection after the handshake."""

    def __init__(self, gateway: FakeGateway, writer: asyncio.StreamWriter) -> None:
        self.gateway = gateway
        self.writer = writer
        self.client_id: int | None = None
        self.version = SERVER_VERSION
        self.history: dict[int, _HistorySub] = {}
        self.realtime: dict[int, _RealtimeSub] = {}
        self.closed = False

    def send(self, *fields: object) -> None:
        if self.closed:
            return
        self.writer.write(encode(fields))

    def error(self, req_id: int, code: int, text: str) -> None:
        self.send(Out.ERR_MSG, 2, req_id, code, text, "")

    def abort(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            self.writer.transport.abort()


class FakeGateway:
    """Start with `async with FakeGateway() as gw:`; connect clients to ("127.0.0.1", gw.port)."""

    def __init__(
        self,
        *,
        port: int = 0,
        account: str = "DU1234567",
        contracts: Iterable[GatewayContract] = DEFAULT_CONTRACTS,
        start: datetime = datetime(2024, 1, 2, 15, 0, tzinfo=UTC),
        market: Market | None = None,
        next_order_id: int = 1,
    ) -> None:
        self.port = port
        self.account = account
        self.contracts = tuple(contracts)
        self.now = start
        self.market = market or Market()
        self.scenario = Scenario()
        self.sessions: list[Session] = []
        self.orders: dict[int, GatewayOrder] = {}
        self.executions: list[GatewayExecution] = []
        self.positions: dict[int, tuple[float, float]] = {}
        self.requests: list[tuple[int | None, int]] = []
        self.connections_accepted = 0
        self.connectivity_lost = False
        self._next_order_id = next_order_id
        self._next_perm_id = 1_000_000
        self._next_exec = 1
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- lifecycle ----------------------------------------------------------------------------
    async def __aenter__(self) -> FakeGateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen on loopback (on a free port the first time, the same port after a restart)."""
        self._server = await asyncio.start_server(self._on_connect, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every session; broker state is kept."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.drop_connections()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.sleep(0)

    async def restart(self, outage: float = 0.2) -> None:
        """The nightly Gateway restart: everyone disconnected, connections refused, then back."""
        await self.stop()
        await asyncio.sleep(outage)
        await self.start()

    def drop_connections(self) -> None:
        """Cut every client socket at once, as a network failure would."""
        for session in list(self.sessions):
            session.abort()
        self.sessions.clear()

    @property
    def live_sessions(self) -> list[Session]:
        return [s for s in self.sessions if not s.closed and s.client_id is not None]

    def client_ids(self) -> list[int]:
        return sorted(s.client_id for s in self.live_sessions if s.client_id is not None)

    # ---- connectivity codes -----------------------------------------------------------------
    def broadcast_error(self, code: int, text: str) -> None:
        for session in self.live_sessions:
            session.error(-1, code, text)

    def lose_connectivity(self) -> None:
        """1100: the Gateway lost its link to IB; data stops flowing."""
        self.connectivity_lost = True
        self.broadcast_error(1100, "Connectivity between IB and Trader Workstation has been lost.")

    def restore_connectivity(self, *, data_lost: bool) -> None:
        """1101 (subscriptions gone, resubscribe) or 1102 (subscriptions kept)."""
        self.connectivity_lost = False
        if data_lost:
            for session in self.live_sessions:
                session.history.clear()
                session.realtime.clear()
            self.broadcast_error(
                1101, "Connectivity between IB and TWS has been restored- data lost."
            )
        else:
            self.broadcast_error(
                1102, "Connectivity between IB and TWS has been restored- data maintained."
            )

    def freeze(self, symbol: str) -> int:
        """A frozen stream: the symbol's live bars silently stop (no error, no disconnect).
        Returns how many subscriptions went quiet; a new request streams again."""
        frozen = 0
        for session in self.live_sessions:
            for req_id, sub in list(session.history.items()):
                if sub.contract.symbol == symbol:
                    del session.history[req_id]
                    frozen += 1
            for req_id, rt in list(session.realtime.items()):
                if rt.contract.symbol == symbol:
                    del session.realtime[req_id]
                    frozen += 1
        return frozen

    # ---- the market clock ---------------------------------------------------------------------
    async def advance(self, seconds: int = 60) -> None:
        """Move the virtual clock; closed bars go to keepUpToDate and real-time subscribers."""
        new_now = self.now + timedelta(seconds=seconds)
        for session in self.live_sessions:
            for sub in list(session.history.values()):
                start = sub.current_start
                while start + timedelta(seconds=sub.bar_seconds) <= new_now:
                    if not self.connectivity_lost:
                        self._send_update(
                            session,
                            sub,
                            self.market.bar(sub.contract.symbol, start, sub.bar_seconds),
                        )
                    start += timedelta(seconds=sub.bar_seconds)
                if start != sub.current_start:
                    sub.current_start = start
                    if not self.connectivity_lost:
                        self._send_update(
                            session,
                            sub,
                            self.market.partial(sub.contract.symbol, start, sub.bar_seconds),
                        )
            for rt in list(session.realtime.values()):
                while rt.next_start + timedelta(seconds=5) <= new_now:
                    if not self.connectivity_lost:
                        b = self.market.bar(rt.contract.symbol, rt.next_start, 5)
                        session.send(
                            Out.REAL_TIME_BARS,
                            3,
                            rt.req_id,
                            int(rt.next_start.timestamp()),
                            b.open,
                            b.high,
                            b.low,
                            b.close,
                            b.volume,
                            b.wap,
                            b.count,
                        )
                    rt.next_start += timedelta(seconds=5)
        self.now = new_now
        for session in self.live_sessions:
            with contextlib.suppress(ConnectionError):
                await session.writer.drain()

    def _send_update(self, session: Session, sub: _HistorySub, bar: MarketBar) -> None:
        session.send(
            Out.HISTORICAL_DATA_UPDATE,
            sub.req_id,
            bar.count,
            self._bar_date(bar.start, sub.format_date),
            bar.open,
            bar.close,
            bar.high,
            bar.low,
            bar.wap,
            bar.volume,
        )

    @staticmethod
    def _bar_date(start: datetime, format_date: int) -> str:
        if format_date == 2:
            return str(int(start.timestamp()))
        return start.strftime("%Y%m%d %H:%M:%S UTC")

    # ---- connection handling ----------------------------------------------------------------
    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        session = Session(self, writer)
        self.sessions.append(session)
        buffer = bytearray()
        try:
            prefix = await reader.readexactly(4)
            if prefix != b"API\0":
                return
            while True:
                messages = split_frames(buffer)
                if messages:
                    break
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buffer.extend(chunk)
            _low, high = parse_version_range(messages[0][0])
            if high < SERVER_VERSION and high < 157:
                return
            session.version = min(high, SERVER_VERSION)
            session.send(session.version, ib_time(self.now))
            pending = messages[1:]
            while not session.closed:
                for fields in pending:
                    await self._dispatch(session, fields)
                    if session.closed:
                        return
                await writer.drain()
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buffer.extend(chunk)
                pending = split_frames(buffer)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            session.closed = True
            if session in self.sessions:
                self.sessions.remove(session)
            with contextlib.suppress(Exception):
                writer.close()

    async def _dispatch(self, session: Session, fields: list[str]) -> None:
        msg_id = int(fields[0])
        self.requests.append((session.client_id, msg_id))
        r = Reader(fields[1:])
        handler = _HANDLERS.get(msg_id)
        if handler is None:
            return
        await handler(self, session, r)

    # ---- requests ---------------------------------------------------------------------------
    async def _start_api(self, session: Session, r: Reader) -> None:
        r.skip()  # version
        client_id = r.int()
        busy = {s.client_id for s in self.live_sessions}
        if client_id in busy or client_id in self.scenario.client_ids_in_use:
            session.error(
                -1,
                326,
                "Unable to connect as the client id is already in use. "
                "Retry with a unique client id.",
            )
            await session.writer.drain()
            session.abort()
            return
        session.client_id = client_id
        session.send(Out.MANAGED_ACCTS, 1, self.account)
        session.send(Out.NEXT_VALID_ID, 1, self._next_order_id)
        for code, text in (
            (2104, "Market data farm connection is OK:usfarm"),
            (2106, "HMDS data farm connection is OK:ushmds"),
            (2158, "Sec-def data farm connection is OK:secdefnj"),
        ):
            session.error(-1, code, text)

    async def _req_ids(self, session: Session, r: Reader) -> None:
        session.send(Out.NEXT_VALID_ID, 1, self._next_order_id)

    async def _req_current_time(self, session: Session, r: Reader) -> None:
        session.send(Out.CURRENT_TIME, 1, int(self.now.timestamp()))

    async def _req_managed_accts(self, session: Session, r: Reader) -> None:
        session.send(Out.MANAGED_ACCTS, 1, self.account)

    def find_contract(self, spec: dict[str, str]) -> GatewayContract | None:
        con_id = int(spec["conId"] or 0)
        for c in self.contracts:
            if con_id:
                if c.con_id == con_id:
                    return c
                continue
            sec_type = spec["secType"]
            local = spec["localSymbol"]
            if spec["symbol"] != c.symbol and not (local and local == c.local_symbol):
                continue
            if sec_type and sec_type != c.sec_type:
                continue
            if spec["currency"] and spec["currency"] != c.currency:
                continue
            expiry = spec["lastTradeDateOrContractMonth"]
            if expiry and not c.last_trade_date.startswith(expiry):
                continue
            return c
        return None

    async def _req_contract_data(self, session: Session, r: Reader) -> None:
        r.skip()  # version
        req_id = r.int()
        c = self.find_contract(r.contract())
        if c is None:
            session.error(req_id, 200, "No security definition has been found for the request")
            return
        session.send(
            Out.CONTRACT_DATA,
            req_id,
            c.symbol,
            c.sec_type,
            c.last_trade_date,
            0.0,
            "",
            c.exchange,
            c.currency,
            c.local,
            c.trading_class,
            c.trading_class,
            c.con_id,
            c.min_tick,
            c.multiplier,
            "ACTIVETIM,LMT,MKT,STP,STPLMT,TRAIL",
            f"{c.exchange},{c.primary_exchange}".strip(","),
            1,
            0,
            c.long_name,
            c.primary_exchange,
            c.last_trade_date[:6],
            "",
            "",
            "",
            c.time_zone,
            c.trading_hours,
            c.liquid_hours,
            "",
            0,
            0,  # timeZoneId, tradingHours, liquidHours, evRule, evMultiplier, secIdList count
            1,
            "",
            "",
            "26",
            "",
            "COMMON" if c.sec_type == "STK" else "",  # aggGroup..stockType
            "1",
            "1",
            "1",  # minSize, sizeIncrement, suggestedSizeIncrement
        )
        session.send(Out.CONTRACT_DATA_END, 1, req_id)

    async def _req_historical_data(self, session: Session, r: Reader) -> None:
        req_id = r.int()
        c = self.find_contract(r.contract())
        r.skip()  # includeExpired
        end_text, bar_size, duration = r.str(), r.str(), r.str()
        r.skip()  # useRTH
        r.skip()  # whatToShow
        format_date = r.int()
        keep_up_to_date = r.bool()
        if c is None:
            session.error(req_id, 200, "No security definition has been found for the request")
            return
        if self.scenario.history_delay:
            await asyncio.sleep(self.scenario.history_delay)
        if self.scenario.pacing_violations > 0:
            self.scenario.pacing_violations -= 1
            session.error(
                req_id,
                162,
                "Historical Market Data Service error message:"
                "API historical data query cancelled: pacing violation",
            )
            return
        try:
            seconds = bar_size_seconds(bar_size)
            span = duration_seconds(duration)
            end = parse_end(end_text)
        except ValueError as e:
            session.error(req_id, 321, f"Error validating request:-'bS' : cause - {e}")
            return
        if keep_up_to_date and end is not None:
            session.error(
                req_id,
                321,
                "Error validating request:-'bS' : cause - End date not supported with live updates",
            )
            return
        now_start = align(self.now, seconds)
        last_end = min(end or self.now, self.now)
        first = align(last_end - timedelta(seconds=span), seconds)
        bars: list[MarketBar] = []
        start = first
        while start + timedelta(seconds=seconds) <= last_end:
            bars.append(self.market.bar(c.symbol, start, seconds))
            start += timedelta(seconds=seconds)
        if end is None:
            bars.append(self.market.partial(c.symbol, now_start, seconds))
        out: list[object] = [
            Out.HISTORICAL_DATA,
            req_id,
            ib_time(first),
            ib_time(last_end),
            len(bars),
        ]
        for b in bars:
            out += [
                self._bar_date(b.start, format_date),
                b.open,
                b.high,
                b.low,
                b.close,
                b.volume,
                b.wap,
                b.count,
            ]
        session.send(*out)
        if keep_up_to_date:
            session.history[req_id] = _HistorySub(
                req_id=req_id,
                contract=c,
                bar_seconds=seconds,
                current_start=now_start,
                format_date=format_date,
            )

    async def _cancel_historical_data(self, session: Session, r: Reader) -> None:
        r.skip()
        session.history.pop(r.int(), None)

    async def _req_real_time_bars(self, session: Session, r: Reader) -> None:
        r.skip()  # version
        req_id = r.int()
        c = self.find_contract(r.contract())
        if c is None:
            session.error(req_id, 200, "No security definition has been found for the request")
            return
        session.realtime[req_id] = _RealtimeSub(
            req_id=req_id, contract=c, next_start=align(self.now, 5)
        )

    async def _cancel_real_time_bars(self, session: Session, r: Reader) -> None:
        r.skip()
        session.realtime.pop(r.int(), None)

    async def _req_positions(self, session: Session, r: Reader) -> None:
        for con_id, (qty, avg) in sorted(self.positions.items()):
            c = next(x for x in self.contracts if x.con_id == con_id)
            session.send(
                Out.POSITION_DATA,
                3,
                self.account,
                *c.wire_fields(),
                qty,
                avg,
            )
        session.send(Out.POSITION_END, 1)

    async def _req_account_updates(self, session: Session, r: Reader) -> None:
        r.skip()
        subscribe = r.bool()
        account = r.str()
        if not subscribe:
            return
        for key, value in (
            ("NetLiquidation", "100000.00"),
            ("TotalCashValue", "100000.00"),
            ("BuyingPower", "400000.00"),
        ):
            session.send(Out.ACCT_VALUE, 2, key, value, "USD", account)
        session.send(Out.ACCT_UPDATE_TIME, 1, self.now.strftime("%H:%M"))
        session.send(Out.ACCT_DOWNLOAD_END, 1, account)

    async def _req_account_updates_multi(self, session: Session, r: Reader) -> None:
        r.skip()
        req_id = r.int()
        account = r.str()
        model = r.str()
        session.send(
            Out.ACCOUNT_UPDATE_MULTI,
            1,
            req_id,
            account,
            model,
            "NetLiquidation",
            "100000.00",
            "USD",
        )
        session.send(Out.ACCOUNT_UPDATE_MULTI_END, 1, req_id)

    async def _req_account_summary(self, session: Session, r: Reader) -> None:
        r.skip()
        session.send(Out.ACCOUNT_SUMMARY_END, 1, r.int())

    async def _req_completed_orders(self, session: Session, r: Reader) -> None:
        session.send(Out.COMPLETED_ORDERS_END)

    def _visible(self, session: Session, order: GatewayOrder, *, all_clients: bool) -> bool:
        return all_clients or session.client_id in (0, order.client_id)

    async def _open_orders(self, session: Session, *, all_clients: bool) -> None:
        for order in self.orders.values():
            if (
                not order.done
                and order.status != "PendingSubmit"
                and self._visible(session, order, all_clients=all_clients)
            ):
                self._send_open_order(session, order)
                self._send_status(session, order)
        session.send(Out.OPEN_ORDER_END, 1)

    async def _req_open_orders(self, session: Session, r: Reader) -> None:
        await self._open_orders(session, all_clients=False)

    async def _req_all_open_orders(self, session: Session, r: Reader) -> None:
        await self._open_orders(session, all_clients=True)

    async def _req_executions(self, session: Session, r: Reader) -> None:
        r.skip()
        req_id = r.int()
        client_filter = r.int()
        for ex in self.executions:
            if client_filter and ex.order.client_id != client_filter:
                continue
            self._send_execution(session, req_id, ex)
        for ex in self.executions:
            if not client_filter or ex.order.client_id == client_filter:
                self._send_commission(session, ex)
        session.send(Out.EXECUTION_DATA_END, 1, req_id)

    # ---- orders -------------------------------------------------------------------------------
    async def _place_order(self, session: Session, r: Reader) -> None:
        order_id = r.int()
        c = self.find_contract(r.contract())
        r.skip(2)  # secIdType, secId
        action, quantity, order_type = r.str(), r.float(), r.str()
        lmt, aux = r.str(), r.str()
        tif, oca_group, account = r.str(), r.str(), r.str()
        r.skip(2)  # openClose, origin
        order_ref = r.str()
        transmit = r.bool()
        parent_id = r.int()
        if c is None:
            session.error(order_id, 200, "No security definition has been found for the request")
            return
        assert session.client_id is not None
        existing = self._find(session.client_id, order_id)
        if existing is not None and not existing.done:
            existing.quantity = quantity
            existing.limit_price = float(lmt) if lmt else None
            existing.aux_price = float(aux) if aux else None
            self._notify(existing)
            return
        if existing is not None:
            session.error(order_id, 103, "Duplicate order id")
            return
        order = GatewayOrder(
            perm_id=self._next_perm_id,
            order_id=order_id,
            client_id=session.client_id,
            contract=c,
            action=action,
            quantity=quantity,
            order_type=order_type,
            limit_price=float(lmt) if lmt else None,
            aux_price=float(aux) if aux else None,
            tif=tif or "DAY",
            order_ref=order_ref,
            account=account or self.account,
            parent_id=parent_id,
            oca_group=oca_group,
            transmit=transmit,
            placed_at=self.now,
        )
        self._next_perm_id += 1
        self._next_order_id = max(self._next_order_id, order_id + 1)
        self.orders[order.perm_id] = order
        if not transmit:
            return
        family = [
            o
            for o in self.orders.values()
            if o.client_id == order.client_id
            and o.status == "PendingSubmit"
            and (o.order_id == order.parent_id or o.parent_id == order.parent_id or o is order)
        ]
        self._spawn(self._work(family))

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _work(self, family: list[GatewayOrder]) -> None:
        if self.scenario.ack_delay:
            await asyncio.sleep(self.scenario.ack_delay)
        for order in sorted(family, key=lambda o: o.order_id):
            if self.scenario.fill == "reject":
                order.status = "Inactive"
                self._notify_error(order, 201, self.scenario.reject_reason)
                self._notify(order)
                continue
            order.status = "PreSubmitted" if order.parent_id else "Submitted"
            self._notify(order)
        for order in sorted(family, key=lambda o: o.order_id):
            if order.done or order.parent_id or self.scenario.fill == "hold":
                continue
            price = self.market.price(order.contract.symbol, self.now)
            if not self._marketable(order, price):
                continue
            if self.scenario.fill == "partial":
                for fraction in self.scenario.partial_fractions:
                    self.fill(order, round(order.quantity * fraction, 6), price)
                    await asyncio.sleep(0.01)
            else:
                self.fill(order, order.quantity, price)

    @staticmethod
    def _marketable(order: GatewayOrder, price: float) -> bool:
        if order.order_type == "MKT":
            return True
        if order.order_type == "LMT" and order.limit_price is not None:
            return (
                price <= order.limit_price if order.action == "BUY" else price >= order.limit_price
            )
        return False

    def _find(self, client_id: int, order_id: int) -> GatewayOrder | None:
        for o in self.orders.values():
            if o.client_id == client_id and o.order_id == order_id:
                return o
        return None

    def order_by_ref(self, order_ref: str) -> GatewayOrder:
        return next(o for o in self.orders.values() if o.order_ref == order_ref)

    def fill(
        self, order: GatewayOrder, quantity: float | None = None, price: float | None = None
    ) -> None:
        """Execute (part of) an order now; children of a filled parent become active."""
        qty = min(quantity if quantity is not None else order.remaining, order.remaining)
        if qty <= 0:
            return
        px = price if price is not None else self.market.price(order.contract.symbol, self.now)
        order.avg_price = (order.avg_price * order.filled + px * qty) / (order.filled + qty)
        order.filled = round(order.filled + qty, 6)
        order.last_fill_price = px
        order.status = "Filled" if order.remaining <= 1e-9 else "Submitted"
        commission = round(
            max(self.scenario.min_commission, qty * self.scenario.commission_per_share), 4
        )
        ex = GatewayExecution(
            exec_id=f"0000e0d5.{self._next_exec:08x}.01.01",
            order=order,
            shares=qty,
            price=px,
            cum_qty=order.filled,
            avg_price=order.avg_price,
            time=self.now,
            commission=commission,
        )
        self._next_exec += 1
        self.executions.append(ex)
        sign = 1.0 if order.action == "BUY" else -1.0
        pos, avg = self.positions.get(order.contract.con_id, (0.0, 0.0))
        new_pos = round(pos + sign * qty, 6)
        if new_pos == 0:
            avg = 0.0
        elif pos == 0 or (pos > 0) == (sign > 0):
            avg = (avg * abs(pos) + px * qty) / abs(new_pos)
        self.positions[order.contract.con_id] = (new_pos, avg)
        sessions = self._order_sessions(order)
        for session in sessions:
            self._send_execution(session, -1, ex)
            self._send_open_order(session, order)
            self._send_status(session, order)
        if self.scenario.commission_delay:
            self._spawn(self._commission_later(sessions, ex, self.scenario.commission_delay))
        else:
            for session in sessions:
                self._send_commission(session, ex)
        if order.status == "Filled":
            for child in self.orders.values():
                if (
                    child.parent_id == order.order_id
                    and child.client_id == order.client_id
                    and not child.done
                ):
                    child.status = "Submitted"
                    self._notify(child)
            for sibling in self.orders.values():
                same_oca = bool(order.oca_group) and sibling.oca_group == order.oca_group
                same_parent = bool(order.parent_id) and sibling.parent_id == order.parent_id
                if sibling is not order and (same_oca or same_parent) and not sibling.done:
                    self.cancel(sibling, reason="OCA group")

    async def _commission_later(
        self, sessions: list[Session], ex: GatewayExecution, delay: float
    ) -> None:
        await asyncio.sleep(delay)
        for session in sessions:
            self._send_commission(session, ex)

    def cancel(self, order: GatewayOrder, *, reason: str = "") -> None:
        order.status = "Cancelled"
        self._notify_error(order, 202, f"Order Canceled - reason:{reason}")
        self._notify(order)

    async def _cancel_order(self, session: Session, r: Reader) -> None:
        r.skip()
        order_id = r.int()
        assert session.client_id is not None
        order = self._find(session.client_id, order_id)
        if order is None:
            session.error(order_id, 135, f"Can't find order with id ={order_id}")
            return
        if order.done:
            session.error(
                order_id,
                10148,
                f"OrderId {order_id} that needs to be cancelled cannot "
                f"be cancelled, state: {order.status}.",
            )
            return
        if self.scenario.cancel_delay:
            self._spawn(self._cancel_later(order, self.scenario.cancel_delay))
            return
        self._cancel_family(order)

    async def _cancel_later(self, order: GatewayOrder, delay: float) -> None:
        await asyncio.sleep(delay)
        if not order.done:
            self._cancel_family(order)

    def _cancel_family(self, order: GatewayOrder) -> None:
        self.cancel(order)
        for child in self.orders.values():
            if (
                child.parent_id == order.order_id
                and child.client_id == order.client_id
                and not child.done
            ):
                self.cancel(child, reason="parent cancelled")

    def _order_sessions(self, order: GatewayOrder) -> list[Session]:
        return [s for s in self.live_sessions if s.client_id in (0, order.client_id)]

    def _notify(self, order: GatewayOrder) -> None:
        for session in self._order_sessions(order):
            self._send_open_order(session, order)
            self._send_status(session, order)

    def _notify_error(self, order: GatewayOrder, code: int, text: str) -> None:
        for session in self._order_sessions(order):
            session.error(order.order_id, code, text)

    def _send_status(self, session: Session, o: GatewayOrder) -> None:
        session.send(
            Out.ORDER_STATUS,
            o.order_id,
            o.status,
            o.filled,
            o.remaining,
            o.avg_price,
            o.perm_id,
            o.parent_id,
            o.last_fill_price,
            o.client_id,
            "",
            0.0,
        )

    def _send_open_order(self, session: Session, o: GatewayOrder) -> None:
        c = o.contract
        u, ud = UNSET_INTEGER, UNSET_DOUBLE
        session.send(
            Out.OPEN_ORDER,
            o.order_id,
            *c.wire_fields(),
            o.action,
            o.quantity,
            o.order_type,
            o.limit_price if o.limit_price is not None else ud,
            o.aux_price if o.aux_price is not None else ud,
            o.tif,
            o.oca_group,
            o.account,
            "",
            0,
            o.order_ref,
            o.client_id,
            o.perm_id,
            0,
            0,
            0.0,
            "",  # outsideRth, hidden, discretionaryAmt, goodAfterTime
            "",
            "",
            "",
            "",  # sharesAllocation, faGroup, faMethod, faPercentage
            "",
            "",
            "",
            ud,
            "",  # modelCode, goodTillDate, rule80A, percentOffset, settlingFirm
            0,
            "",
            -1,
            0,  # shortSaleSlot, designatedLocation, exemptCode, auctionStrategy
            ud,
            ud,
            ud,
            ud,
            ud,  # startingPrice, stockRefPrice, delta, stockRangeLower/Upper
            u,
            0,
            0,
            0,
            u,
            3,  # displaySize, blockOrder, sweepToFill, allOrNone, minQty, ocaType
            0,
            0,
            ud,
            o.parent_id,
            0,  # eTradeOnly, firmQuoteOnly, nbboPriceCap, parentId, triggerMethod
            ud,
            0,
            "",
            ud,  # volatility, volatilityType, deltaNeutralOrderType, deltaNeutralAuxPrice
            0,
            0,
            ud,
            ud,
            ud,
            u,  # continuousUpdate, referencePriceType, trailStop, trailingPct, basisPoints(+type)
            "",
            0,
            0,
            0,  # comboLegsDescrip, comboLegs, orderComboLegs, smartComboRoutingParams
            u,
            u,
            ud,  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement
            "",  # hedgeType
            0,
            "",
            "",
            0,
            0,  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld, dnc present
            "",  # algoStrategy
            0,
            0,
            o.status,  # solicited, whatIf, status
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",  # margin before/change/after
            ud,
            ud,
            ud,
            "",
            "",  # commission, min, max, currency, warningText
            0,
            0,  # randomizeSize, randomizePrice
            0,  # conditions
            "",
            ud,
            ud,
            ud,
            ud,
            ud,
            ud,
            0,  # adjusted order params
            "",
            "",
            "",  # softDollarTier
            ud,
            0,
            0,
            0,
            0,  # cashQty, dontUseAutoPriceForHedge, isOmsContainer, discretionaryUpTo, priceMgmt
            u,
            u,
            0,  # duration, postToAts, autoCancelParent
            u,
            u,
            ud,
            ud,
            ud,  # minTradeQty, minCompeteSize, competeAgainstBestOffset, midOffsets
        )

    def _send_execution(self, session: Session, req_id: int, ex: GatewayExecution) -> None:
        o, c = ex.order, ex.order.contract
        session.send(
            Out.EXECUTION_DATA,
            req_id,
            o.order_id,
            *c.wire_fields(),
            ex.exec_id,
            ib_time(ex.time),
            o.account,
            c.exchange,
            "BOT" if o.action == "BUY" else "SLD",
            ex.shares,
            ex.price,
            o.perm_id,
            o.client_id,
            0,
            ex.cum_qty,
            ex.avg_price,
            o.order_ref,
            "",
            "",
            "",
            1,
            0,  # evRule, evMultiplier, modelCode, lastLiquidity, pendingPriceRevision
        )

    def _send_commission(self, session: Session, ex: GatewayExecution) -> None:
        session.send(
            Out.COMMISSION_REPORT,
            1,
            ex.exec_id,
            ex.commission,
            "USD",
            UNSET_DOUBLE,
            UNSET_DOUBLE,
            "",
        )

    async def _req_global_cancel(self, session: Session, r: Reader) -> None:
        for order in list(self.orders.values()):
            if not order.done:
                self.cancel(order, reason="global cancel")

    async def _ignore(self, session: Session, r: Reader) -> None:
        return


_HANDLERS = {
    In.START_API: FakeGateway._start_api,
    In.REQ_IDS: FakeGateway._req_ids,
    In.REQ_CURRENT_TIME: FakeGateway._req_current_time,
    In.REQ_MANAGED_ACCTS: FakeGateway._req_managed_accts,
    In.REQ_CONTRACT_DATA: FakeGateway._req_contract_data,
    In.REQ_HISTORICAL_DATA: FakeGateway._req_historical_data,
    In.CANCEL_HISTORICAL_DATA: FakeGateway._cancel_historical_data,
    In.REQ_REAL_TIME_BARS: FakeGateway._req_real_time_bars,
    In.CANCEL_REAL_TIME_BARS: FakeGateway._cancel_real_time_bars,
    In.REQ_POSITIONS: FakeGateway._req_positions,
    In.CANCEL_POSITIONS: FakeGateway._ignore,
    In.REQ_ACCOUNT_UPDATES: FakeGateway._req_account_updates,
    In.REQ_ACCOUNT_UPDATES_MULTI: FakeGateway._req_account_updates_multi,
    In.CANCEL_ACCOUNT_UPDATES_MULTI: FakeGateway._ignore,
    In.REQ_ACCOUNT_SUMMARY: FakeGateway._req_account_summary,
    In.CANCEL_ACCOUNT_SUMMARY: FakeGateway._ignore,
    In.REQ_COMPLETED_ORDERS: FakeGateway._req_completed_orders,
    In.REQ_OPEN_ORDERS: FakeGateway._req_open_orders,
    In.REQ_ALL_OPEN_ORDERS: FakeGateway._req_all_open_orders,
    In.REQ_AUTO_OPEN_ORDERS: FakeGateway._ignore,
    In.REQ_EXECUTIONS: FakeGateway._req_executions,
    In.PLACE_ORDER: FakeGateway._place_order,
    In.CANCEL_ORDER: FakeGateway._cancel_order,
    In.REQ_GLOBAL_CANCEL: FakeGateway._req_global_cancel,
    In.REQ_MARKET_DATA_TYPE: FakeGateway._ignore,
}
