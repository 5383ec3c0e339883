"""The TWS API socket protocol at one pinned server version: framing, field encoding, message ids.

Every message is a 4-byte big-endian length followed by NUL-terminated ASCII fields. The client
opens with b"API\\0" and a framed "v<min>..<max>" range; the server answers with two fields, its
version and the connection time. From then on the first field of a message is its id.

SERVER_VERSION is 178 (MIN_SERVER_VER_PENDING_PRICE_REVISION): the highest version ib_async 2.1.0
accepts (MaxClientVersion 178) and inside ibapi's range (100..226), and below 201 where ibapi
switches to protobuf. The field layouts below are the ones both clients decode at 178.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

SERVER_VERSION = 178
UNSET_INTEGER = 2**31 - 1
UNSET_DOUBLE = 1.7976931348623157e308


class In:
    """Message ids a client sends."""

    REQ_MKT_DATA = 1
    CANCEL_MKT_DATA = 2
    PLACE_ORDER = 3
    CANCEL_ORDER = 4
    REQ_OPEN_ORDERS = 5
    REQ_ACCOUNT_UPDATES = 6
    REQ_EXECUTIONS = 7
    REQ_IDS = 8
    REQ_CONTRACT_DATA = 9
    REQ_AUTO_OPEN_ORDERS = 15
    REQ_ALL_OPEN_ORDERS = 16
    REQ_MANAGED_ACCTS = 17
    REQ_HISTORICAL_DATA = 20
    CANCEL_HISTORICAL_DATA = 25
    REQ_CURRENT_TIME = 49
    REQ_REAL_TIME_BARS = 50
    CANCEL_REAL_TIME_BARS = 51
    REQ_GLOBAL_CANCEL = 58
    REQ_MARKET_DATA_TYPE = 59
    REQ_POSITIONS = 61
    REQ_ACCOUNT_SUMMARY = 62
    CANCEL_ACCOUNT_SUMMARY = 63
    CANCEL_POSITIONS = 64
    START_API = 71
    REQ_ACCOUNT_UPDATES_MULTI = 76
    CANCEL_ACCOUNT_UPDATES_MULTI = 77
    REQ_COMPLETED_ORDERS = 99


class Out:
    """Message ids the server sends."""

    ORDER_STATUS = 3
    ERR_MSG = 4
    OPEN_ORDER = 5
    ACCT_VALUE = 6
    ACCT_UPDATE_TIME = 8
    NEXT_VALID_ID = 9
    CONTRACT_DATA = 10
    EXECUTION_DATA = 11
    MANAGED_ACCTS = 15
    HISTORICAL_DATA = 17
    CURRENT_TIME = 49
    REAL_TIME_BARS = 50
    CONTRACT_DATA_END = 52
    OPEN_ORDER_END = 53
    ACCT_DOWNLOAD_END = 54
    EXECUTION_DATA_END = 55
    COMMISSION_REPORT = 59
    POSITION_DATA = 61
    POSITION_END = 62
    ACCOUNT_SUMMARY_END = 64
    ACCOUNT_UPDATE_MULTI = 73
    ACCOUNT_UPDATE_MULTI_END = 74
    HISTORICAL_DATA_UPDATE = 90
    COMPLETED_ORDERS_END = 102


def field(value: object) -> str:
    """One wire field: bools as 0/1, None as empty, unset sentinels as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if value == UNSET_DOUBLE or math.isnan(value):
            return ""
        if value == math.inf:
            return "Infinite"
        return repr(value)
    if isinstance(value, int) and value == UNSET_INTEGER:
        return ""
    return str(value)


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def encode(fields: Iterable[object]) -> bytes:
    """A framed message from its fields."""
    return frame("".join(field(f) + "\0" for f in fields).encode())


def split_frames(buffer: bytearray) -> list[list[str]]:
    """Pop every complete message from buffer and return their fields."""
    messages: list[list[str]] = []
    while len(buffer) >= 4:
        (size,) = struct.unpack(">I", buffer[:4])
        if len(buffer) < 4 + size:
            break
        payload = bytes(buffer[4 : 4 + size])
        del buffer[: 4 + size]
        parts = payload.decode(errors="backslashreplace").split("\0")
        if parts and parts[-1] == "":
            parts.pop()
        messages.append(parts)
    return messages


def parse_version_range(text: str) -> tuple[int, int]:
    """'v157..178 +PACEAPI' -> (157, 178)."""
    head = text.split(" ", 1)[0]
    if not head.startswith("v"):
        msg = f"handshake: expected 'v<min>..<max>', got {text!r}"
        raise ValueError(msg)
    low, _, high = head[1:].partition("..")
    return int(low), int(high or low)


def ib_time(ts: datetime) -> str:
    """'20240102 15:30:00 UTC', the layout both clients parse with its zone."""
    return ts.astimezone(UTC).strftime("%Y%m%d %H:%M:%S UTC")


class Reader:
    """Sequential access to a request's fields."""

    def __init__(self, fields: Sequence[str]) -> None:
        self._fields = list(fields)
        self._i = 0

    def str(self) -> str:
        value = self._fields[self._i] if self._i < len(self._fields) else ""
        self._i += 1
        return value

    def int(self) -> int:
        text = self.str()
        return int(float(text)) if text else 0

    def float(self) -> float:
        text = self.str()
        return float(text) if text and text != "Infinite" else 0.0

    def bool(self) -> bool:
        return self.int() != 0

    def skip(self, n: int = 1) -> None:
        self._i += n

    def contract(self) -> dict[str, str]:
        """The 12 contract fields clients send in requests (conId first)."""
        names = (
            "conId",
            "symbol",
            "secType",
            "lastTradeDateOrContractMonth",
            "strike",
            "right",
            "multiplier",
            "exchange",
            "primaryExchange",
            "currency",
            "localSymbol",
            "tradingClass",
        )
        return {name: self.str() for name in names}
