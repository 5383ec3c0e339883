from __future__ import annotations

import asyncio
import json
from pathlib import Path

from structlog.testing import capture_logs

from daemon.model.bootstrap import _relay_progress, latest_event


def _line(**event: object) -> bytes:
    return json.dumps(event).encode() + b"\n"


def test_latest_event_when_log_has_json_noise_and_half_line_then_newest_whole_event_and_offset(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bootstrap.log"
    path.write_bytes(b"old line before this bootstrap\n")
    start = path.stat().st_size
    with path.open("ab") as f:
        f.write(_line(event="build.stage_finished", stage="charts", level="info"))
        f.write(b"Traceback (most recent call last): not json\n")
        f.write(_line(event="epoch.finished", epoch=3, loss=0.5))
        f.write(b'{"event": "half written')
    latest, offset = latest_event(path, start)
    assert latest == {"last": "epoch.finished", "epoch": 3}
    assert offset == path.stat().st_size - len(b'{"event": "half written')
    with path.open("ab") as f:
        f.write(b'", "stage": "tabular"}\n')
    assert latest_event(path, offset) == (
        {"last": "half written", "stage": "tabular"},
        path.stat().st_size,
    )


def test_latest_event_when_log_missing_then_none_and_offset_kept(tmp_path: Path) -> None:
    assert latest_event(tmp_path / "absent.log", 7) == (None, 7)


def test_relay_when_bootstrap_writes_then_daemon_logs_its_progress(tmp_path: Path) -> None:
    path = tmp_path / "bootstrap.log"
    path.write_bytes(b"")

    async def scenario() -> list[dict[str, object]]:
        with capture_logs() as logs:
            relay = asyncio.create_task(_relay_progress(path, 0, 0.01))
            seen = lambda: [e for e in logs if e["event"] == "model.bootstrap_progress"]  # noqa: E731
            while not seen():
                await asyncio.sleep(0.005)
            path.write_bytes(_line(event="build.stage_finished", stage="clip"))
            for _ in range(2000):
                if any(e.get("stage") == "clip" for e in seen()):
                    break
                await asyncio.sleep(0.005)
            relay.cancel()
            return seen()

    progress = asyncio.run(scenario())
    assert progress[0]["last"] == "no build event yet"
    assert progress[0]["log"] == str(path)
    assert any(
        e.get("last") == "build.stage_finished" and e.get("stage") == "clip" for e in progress
    )


def test_build_log_when_cli_build_logs_then_it_is_the_file_the_daemon_relays(
    tmp_path: Path,
) -> None:
    import structlog

    from daemon.cli.model import _log_to_file
    from daemon.model.bootstrap import build_log_path

    out = tmp_path / "bundles" / "default"
    with _log_to_file(out):
        structlog.get_logger("test").info("build.stage_finished", stage="xgb")
    latest, _ = latest_event(build_log_path(out), 0)
    assert latest == {"last": "build.stage_finished", "stage": "xgb"}
