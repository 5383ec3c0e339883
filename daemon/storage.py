"""Fatal storage errors: one line naming the file and the cause, and an exit status systemd does
not restart on (RestartPreventExitStatus= in systemd/vlmtrader.service)."""

from __future__ import annotations

import structlog

from daemon.errors import EXIT_STORAGE, StorageError

log = structlog.get_logger("daemon.storage")


def first_cause(error: BaseException) -> BaseException:
    """The first leaf of an exception group (a TaskGroup wraps what a task raised), else the error."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def storage_failed(error: StorageError) -> int:
    """Log `storage.failed` (the message names file and cause), return EXIT_STORAGE."""
    log.error("storage.failed", error=" ".join(str(error).split()), exit_code=EXIT_STORAGE)
    return EXIT_STORAGE
