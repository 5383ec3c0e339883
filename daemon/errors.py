"""Errors of the daemon, named by what the caller should do.

DaemonError
 ├── ConfigError       the configuration is unusable: print the one-line message, exit 2
 ├── TransientError    an adapter lost something that comes back (network, broker): retry with backoff
 │    └── FeedTimeout  a feed request timed out
 ├── InvariantError    our own state is inconsistent: log daemon.crashed, exit 1, reconcile on restart
 │    └── StorageError a journal or venue file cannot be read or written (disk full, locked,
 │                     read-only, corrupt): log storage.failed, exit EXIT_STORAGE, no restart loop
 └── InputError        one input (bar file, command, request, bundle) is bad: reject it, keep running
"""

from __future__ import annotations


class DaemonError(Exception):
    """Base of every error the daemon raises on purpose."""


class ConfigError(DaemonError):
    """Bad configuration; the message names the file, the key path and the problem."""


class TransientError(DaemonError):
    """Something outside us failed in a way that may succeed on retry."""


class FeedTimeout(TransientError):
    """A market data request did not answer in time."""


class InvariantError(DaemonError):
    """Internal state is inconsistent; crash and let systemd restart us."""


class StorageError(InvariantError):
    """A state file cannot be used; the message names the file and the cause. Restarting does
    not help until an operator acts, so the systemd unit does not restart on EXIT_STORAGE."""


class InputError(DaemonError):
    """One input is malformed; it is rejected and nothing else changes."""


EXIT_OK = 0
EXIT_CRASH = 1
EXIT_CONFIG = 2
EXIT_STORAGE = 74  # EX_IOERR; listed in the unit's RestartPreventExitStatus=
