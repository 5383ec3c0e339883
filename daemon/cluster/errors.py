"""Errors of `--ray`, named by what the caller should do.

ClusterError (an InputError)  Ray is missing, the address is unusable or the cluster failed the
                              run: print the one-line message, exit 1; nothing was written.
"""

from __future__ import annotations

from daemon.errors import InputError


class ClusterError(InputError):
    """--ray could not run: the message says what to install, fix or retry."""
