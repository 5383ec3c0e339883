"""set_log_level changes the level of loggers already bound and cached (a SIGHUP reload)."""

from __future__ import annotations

import io
import json
import logging

import structlog

from daemon import log_setup
from daemon.log_setup import configure_logging, set_log_level


def test_set_log_level_when_loggers_cached_then_new_level_applies_to_them() -> None:
    saved = log_setup._level[0]
    out = io.StringIO()
    try:
        configure_logging(level="info", fmt="json", stream=out)
        log = structlog.get_logger("test.level")
        log.info("first")  # binds and caches the logger
        log.debug("hidden")
        set_log_level("debug")
        log.debug("shown")
        library_level_at_debug = logging.getLogger().level
        set_log_level("warning")
        log.info("dropped")
        log.warning("kept")
        library_level_at_warning = logging.getLogger().level
    finally:
        log_setup._level[0] = saved

    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events == ["first", "shown", "kept"]
    assert library_level_at_debug == logging.INFO  # libraries are chatty: info at most verbose
    assert library_level_at_warning == logging.WARNING
