"""One ib_async connection to IB Gateway that reconnects forever (shared by the feed and execution).

IbSession connects with a timeout, falls back to other client ids on 326, reconnects with capped
exponential backoff and jitter, and reports 1100/1101/1102 and farm codes to its owner as
SessionChange values. ib_async callbacks only enqueue; all work happens in run().
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import structlog
from ib_async import IB

from daemon.errors import TransientError
from daemon.ib.config import IbBackoffConfig, IbConfig

log = structlog.get_logger("daemon.ib.session")

LOST, RESTORED_DATA_LOST, RESTORED = 1100, 1101, 1102
CLIENT_ID_IN_USE = 326
PACING_VIOLATION = 162
FARM_BROKEN = frozenset({2103, 2105, 2157})
FARM_OK = frozenset({2104, 2106, 2158})


class GatewayUnreachable(TransientError):
    """No IB Gateway answered within the allowed connection attempts: start it or fix host/port."""


class SessionChange(msgspec.Struct, frozen=True, kw_only=True):
    """Something the connection reports to its owner."""

    kind: str  # connected | disconnected | lost | restored | farm_broken | farm_ok | error
    code: int = 0
    req_id: int = -1
    message: str = ""
    generation: int = 0


def backoff_delay(
    attempt: int, cfg: IbBackoffConfig, rand: Callable[[], float] = random.random
) -> float:
    """initial * multiplier**attempt capped at max, spread by +-jitter."""
    base = min(cfg.max_seconds, cfg.initial_seconds * cfg.multiplier ** min(attempt, 64))
    return max(0.0, base * (1.0 + cfg.jitter * (2.0 * rand() - 1.0)))


class IbSession:
    """One ib_async connection that reconnects forever; changes go to `listener`."""

    def __init__(
        self,
        *,
        config: IbConfig,
        client_ids: Sequence[int],
        name: str = "data",
        listener: Callable[[SessionChange], None] | None = None,
    ) -> None:
        self.config = config
        self.client_ids = tuple(dict.fromkeys(client_ids))
        self.name = name
        self.listener = listener or (lambda change: None)
        self.ib = IB()
        self.ib.RaiseRequestErrors = True
        self.client_id: int | None = None
        self.generation = 0
        self.connected = asyncio.Event()
        self.healthy = asyncio.Event()  # connected and no open 1100
        self.link_lost = False
        self.reconnects = 0
        self._last_failure = "failed"  # or "refused": how the last connection attempt failed
        self._inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.ib.errorEvent += self._on_error
        self.ib.disconnectedEvent += self._on_disconnected

    # ib_async callbacks: enqueue only.
    def _on_error(self, req_id: int, code: int, message: str, contract: Any = None) -> None:
        self._inbox.put_nowait(("error", req_id, code, message))

    def _on_disconnected(self) -> None:
        self._inbox.put_nowait(("disconnected",))

    @property
    def ready(self) -> bool:
        return self.connected.is_set() and not self.link_lost

    def _set_link_lost(self, lost: bool) -> None:
        self.link_lost = lost
        if lost or not self.connected.is_set():
            self.healthy.clear()
        else:
            self.healthy.set()

    async def run(self, *, max_attempts: int | None = None) -> None:
        """Connect, watch, reconnect; never returns (cancel it to stop).

        A refused connection (the Gateway is down, e.g. for its nightly restart) is retried every
        `backoff.refused_retry_seconds`; other failures back off exponentially; the backoff starts
        over once the port answers. With max_attempts, gives up after that many failed attempts in
        a row and raises GatewayUnreachable (for one-shot tools)."""
        attempt = 0
        failures = 0
        try:
            while True:
                client_id = await self._connect_any()
                if client_id is None:
                    failures += 1
                    if max_attempts is not None and failures >= max_attempts:
                        cfg = self.config
                        msg = (
                            f"no IB Gateway answered at {cfg.host}:{cfg.port} after "
                            f"{failures} connection attempts: start IB Gateway or fix ib.host/ib.port"
                        )
                        raise GatewayUnreachable(msg)
                    if self._last_failure == "refused":
                        attempt = 0
                        delay = self.config.backoff.refused_retry_seconds
                    else:
                        delay = backoff_delay(attempt, self.config.backoff)
                        attempt += 1
                    log.warning(
                        "feed.reconnecting",
                        session=self.name,
                        attempt=failures,
                        failure=self._last_failure,
                        delay_seconds=round(delay, 3),
                    )
                    await asyncio.sleep(delay)
                    continue
                attempt = failures = 0
                self.client_id = client_id
                self.generation += 1
                self.connected.set()
                self._set_link_lost(False)
                log.info(
                    "feed.connected",
                    session=self.name,
                    client_id=client_id,
                    port=self.config.port,
                    generation=self.generation,
                )
                self.listener(SessionChange(kind="connected", generation=self.generation))
                await self._watch()
                self.connected.clear()
                self.healthy.clear()
                self.reconnects += 1
                log.warning("feed.disconnected", session=self.name, client_id=client_id)
                self.listener(SessionChange(kind="disconnected", generation=self.generation))
        finally:
            self.connected.clear()
            self.healthy.clear()
            self.ib.disconnect()

    async def _connect_any(self) -> int | None:
        """Try each client id in turn; 326 moves to the next one at once."""
        for client_id in self.client_ids:
            result = await self._connect_once(client_id)
            if result == "ok":
                return client_id
            if result != "in_use":
                return None
            log.warning("ib.client_id_in_use", session=self.name, client_id=client_id)
        log.error(
            "ib.client_ids_exhausted",
            session=self.name,
            client_ids=list(self.client_ids),
            hint="every configured client id is in use: add ib.fallback_client_ids or stop the other client",
        )
        return None

    async def _connect_once(self, client_id: int) -> str:
        self._last_failure = "failed"
        while not self._inbox.empty():
            self._inbox.get_nowait()
        cfg = self.config
        connect = asyncio.ensure_future(
            self.ib.connectAsync(
                cfg.host,
                cfg.port,
                clientId=client_id,
                timeout=cfg.connect_timeout_seconds,
                account=cfg.effective_account,
            )
        )
        try:
            while not connect.done():
                getter = asyncio.ensure_future(self._inbox.get())
                done, _ = await asyncio.wait({connect, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    item = getter.result()
                    if item[0] == "error" and item[2] == CLIENT_ID_IN_USE:
                        connect.cancel()
                        with contextlib.suppress(BaseException):
                            await connect
                        self.ib.disconnect()
                        return "in_use"
                else:
                    getter.cancel()
            connect.result()
        except (OSError, TimeoutError, ConnectionError) as e:
            if isinstance(e, ConnectionRefusedError):
                self._last_failure = "refused"
            log.warning(
                "feed.connect_failed",
                session=self.name,
                client_id=client_id,
                error=type(e).__name__,
                detail=str(e)[:200],
            )
            self.ib.disconnect()
            return "failed"
        if not self.ib.isConnected():
            return "failed"
        return "ok"

    async def _watch(self) -> None:
        while True:
            item = await self._inbox.get()
            if item[0] == "disconnected":
                if self.ib.isConnected():
                    continue
                return
            _, req_id, code, message = item
            change: SessionChange | None = None
            if code == LOST:
                self._set_link_lost(True)
                change = SessionChange(kind="lost", code=code, message=message)
                log.warning("feed.link_lost", session=self.name, code=code)
            elif code in (RESTORED_DATA_LOST, RESTORED):
                self._set_link_lost(False)
                change = SessionChange(kind="restored", code=code, message=message)
                log.info("feed.link_restored", session=self.name, code=code)
            elif code in FARM_BROKEN:
                change = SessionChange(kind="farm_broken", code=code, message=message)
                log.warning("feed.farm_broken", session=self.name, code=code, detail=message)
            elif code in FARM_OK:
                change = SessionChange(kind="farm_ok", code=code, message=message)
            elif req_id != -1 or code in (504, 10182):
                change = SessionChange(kind="error", code=code, req_id=req_id, message=message)
            if change is not None:
                self.listener(msgspec.structs.replace(change, generation=self.generation))
