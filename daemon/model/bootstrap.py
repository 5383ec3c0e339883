"""The background `vlmtrader model bootstrap` a daemon runs while it trades on rules: its console
output goes to bootstrap.log, the build's own JSON lines to <bundle>.build.log, and its progress is
relayed from the latter into the daemon's log every `every` seconds, so an operator watching the
daemon sees the build move (stage, epoch) without knowing about either file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("daemon.model")

PROGRESS_EVERY_SECONDS = 30.0
# The build's own lines worth relaying, and the fields that say where it is.
_PROGRESS_FIELDS = ("stage", "epoch", "epochs", "step", "rows", "charts", "fold")


def build_log_path(out: Path) -> Path:
    """Where `model build`/`model bootstrap --out OUT` writes its structured log: OUT.build.log."""
    return out.with_name(f"{out.name}.build.log")


async def run_bootstrap(
    out: Path, extra: tuple[str, ...], *, every: float = PROGRESS_EVERY_SECONDS
) -> tuple[int, Path]:
    """Run `vlmtrader model bootstrap --out OUT` with its output in OUT/../bootstrap.log; the exit
    status and the log's path."""
    args = [sys.executable, "-m", "daemon.cli", "model", "bootstrap", "--out", str(out), *extra]
    log_path = out.parent / "bootstrap.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    build_log = build_log_path(out)
    start = build_log.stat().st_size if build_log.exists() else 0
    log.info(
        "model.bootstrap_started",
        out=str(out),
        scorer="rules",
        log=str(log_path),
        build_log=str(build_log),
    )
    with log_path.open("ab") as sink:
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=sink, stderr=asyncio.subprocess.STDOUT
        )
        relay = asyncio.create_task(_relay_progress(build_log, start, every), name="bootstrap-log")
        try:
            return await proc.wait(), log_path
        except asyncio.CancelledError:
            proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
            if proc.returncode is None:
                proc.kill()
            raise
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay


async def _relay_progress(log_path: Path, offset: int, every: float) -> None:
    """Every `every` seconds, one `model.bootstrap_progress` line: time so far and the build's
    latest event (read from what the bootstrap appended to its log since it started)."""
    started = time.monotonic()
    while True:
        await asyncio.sleep(every)
        latest, offset = await asyncio.to_thread(latest_event, log_path, offset)
        log.info(
            "model.bootstrap_progress",
            elapsed_s=round(time.monotonic() - started),
            log=str(log_path),
            **(latest or {"last": "no build event yet"}),
        )


def latest_event(log_path: Path, offset: int) -> tuple[dict[str, Any] | None, int]:
    """The newest JSON event line after `offset` (as {"last": event, <progress fields>}) and the new
    offset; lines that are not JSON (tracebacks, warnings) are skipped."""
    try:
        with log_path.open("rb") as f:
            f.seek(offset)
            chunk = f.read()
    except OSError:
        return None, offset
    end = chunk.rfind(b"\n") + 1  # a half-written last line is read next time
    latest: dict[str, Any] | None = None
    for line in chunk[:end].splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("event"), str):
            latest = {"last": event["event"]}
            latest.update({k: event[k] for k in _PROGRESS_FIELDS if k in event})
    return latest, offset + end
