"""A reload that changes the log level writes its `config.reloaded` line before the new level takes
effect, so no line at the new level (another thread's debug line) comes ahead of it."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import structlog

from daemon import log_setup
from daemon.config import load_config
from daemon.log_setup import add_event_sink, configure_logging, remove_event_sink
from daemon.model.slot import daemon_slot
from daemon.reload import apply_reload
from tests.daemon.explain_helpers import explained_pipeline


def test_reload_when_level_lowered_to_debug_then_reload_line_is_written_under_the_old_level(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"state_dir: {tmp_path}\nscorer: {{kind: rules}}\nlog: {{level: info}}\n")
    running = load_config(config)
    config.write_text(f"state_dir: {tmp_path}\nscorer: {{kind: rules}}\nlog: {{level: debug}}\n")
    saved, out = log_setup._level[0], io.StringIO()
    # What a debug line written at the instant the reload line is emitted would do: dropped or kept.
    seen: list[bool] = []

    def probe(name: str, _fields: MutableMapping[str, Any]) -> None:
        if name == "config.reloaded":
            seen.append(log_setup._METHOD_LEVELS["debug"] >= log_setup._level[0])

    configure_logging(level="info", fmt="json", stream=out)
    add_event_sink(probe)
    try:
        slot = daemon_slot(running)
        with explained_pipeline(
            tmp_path / "run", scorer=slot.current, bundle_for=None, explain=None
        ) as pipeline:
            cfg, report = asyncio.run(apply_reload(running, config, pipeline, slot))
        structlog.get_logger("test.after").debug("after")
        debug_now = log_setup._level[0]
    finally:
        remove_event_sink(probe)
        log_setup._level[0] = saved

    assert report.applied == ("log.level",)
    assert cfg.log.level == "debug"
    assert seen == [False]  # the reload line went out while debug lines were still dropped
    assert debug_now == log_setup._METHOD_LEVELS["debug"]  # and the new level is in force after it
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events.index("config.reloaded") < events.index("after")
