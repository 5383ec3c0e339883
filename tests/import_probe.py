"""Which of some modules a piece of code loads, run in a fresh interpreter (sys.modules of the test
process already holds everything)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

_PROBE = """
{body}
import sys as _sys
print("loaded:" + ",".join(m for m in {modules!r} if m in _sys.modules))
"""


def modules_loaded_after(body: str, modules: Sequence[str]) -> list[str]:
    """The names in `modules` that are imported once `body` has run in a new Python process."""
    code = _PROBE.format(body=body, modules=tuple(modules))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("loaded:"))
    return [m for m in line.removeprefix("loaded:").split(",") if m]
