"""ApiServer: uvicorn's Server as a task on the daemon's own loop, leaving signal handling to the daemon."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import structlog
import uvicorn
from fastapi import FastAPI

from daemon.api.config import ApiConfig
from daemon.errors import ConfigError
from daemon.supervisor import Backoff, TaskHealth, describe

log = structlog.get_logger("daemon.api")

TASK_NAME = "api"


class _Server(uvicorn.Server):
    """uvicorn without its own SIGINT/SIGTERM handlers: the daemon owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ApiServer:
    """Async context manager: listening on enter, graceful shutdown (in-flight requests finish) on exit."""

    def __init__(
        self, *, config: ApiConfig, app: FastAPI, health: TaskHealth | None = None
    ) -> None:
        self.config = config
        self.health = health if health is not None else TaskHealth()
        self._stopping = False
        self._server = _Server(
            uvicorn.Config(
                app,
                host=config.host,
                port=config.port,
                lifespan="off",
                log_config=None,
                access_log=False,
                server_header=False,
                timeout_graceful_shutdown=max(1, int(config.shutdown_timeout_seconds)),
            )
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when config.port is 0)."""
        for server in self._server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.config.port

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def __aenter__(self) -> ApiServer:
        if self._task is not None:
            msg = "ApiServer is not reentrant"
            raise RuntimeError(msg)
        self._server.should_exit = False
        self._stopping = False
        self._task = asyncio.create_task(self._serve(), name="http-api")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the bind failure as ConfigError
                msg = f"api: server on {self.config.host}:{self.config.port} stopped while starting"
                raise ConfigError(msg)
            await asyncio.sleep(0.01)
        self.health.up(TASK_NAME)
        log.info("api.started", host=self.config.host, port=self.port)
        return self

    async def _serve(self) -> None:
        """Serve until asked to stop. Supervised: once it has started, an unexpected end of the
        server is logged (task.failed), marked down for /readyz and /metrics, and it serves again
        after a short backoff."""
        backoff = Backoff(minimum=0.2, maximum=5.0)
        while True:
            server = self._server
            try:
                await server.serve()
                error = None if server.should_exit else "the server stopped on its own"
            except SystemExit:
                if not server.started and not self.health.restarts.get(TASK_NAME):
                    msg = f"api: cannot listen on {self.config.host}:{self.config.port} (in use or not permitted)"
                    raise ConfigError(msg) from None
                error = "cannot listen again"
            except Exception as e:  # supervision: the API never ends quietly
                error = describe(e)
                with contextlib.suppress(Exception):  # free the port for the next start
                    await server.shutdown()
            if error is None or self._stopping:
                return
            delay = backoff.next_delay()
            self.health.down(TASK_NAME, error)
            log.error(
                "task.failed",
                task=TASK_NAME,
                error=error,
                restarts=self.health.restarts[TASK_NAME],
                retry_seconds=round(delay, 3),
            )
            await asyncio.sleep(delay)
            if self._stopping:
                return
            self._server = _Server(server.config)
            self.health.up(TASK_NAME)

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._server.should_exit = True
        try:
            await asyncio.wait_for(task, self.config.shutdown_timeout_seconds + 1.0)
        except TimeoutError:
            log.warning("api.stop_timed_out")
        log.info("api.stopped")
