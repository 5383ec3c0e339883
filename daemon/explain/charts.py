"""Chart PNGs stored once per content hash under <state_dir>/charts/<sha256>.png, with retention.

A file is written to a temporary name and renamed, so a reader never sees half a PNG; a second
write of the same content is a no-op. prune() deletes charts older than max_age_days, then the
oldest beyond max_charts (by modification time, which a repeated write refreshes)."""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

HASH_PATTERN = re.compile(r"^[0-9a-f]{64}$")
_SECONDS_PER_DAY = 86_400


class ChartStore:
    """The charts directory: put(png) -> sha256 hex; path(digest) -> a file inside it, or None."""

    def __init__(self, *, directory: Path) -> None:
        self.directory = Path(directory)

    def put(self, png: bytes) -> str:
        """Store png under its sha256 (once); returns the hex digest."""
        digest = hashlib.sha256(png).hexdigest()
        target = self.directory / f"{digest}.png"
        if target.exists():
            os.utime(target)  # recently used: kept longest by the count limit
            return digest
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{digest}.{os.getpid()}.tmp")
        tmp.write_bytes(png)
        tmp.replace(target)
        return digest

    def path(self, digest: str) -> Path | None:
        """The file of a well-formed digest inside the charts dir, None for anything else."""
        if not HASH_PATTERN.fullmatch(digest):
            return None
        root = self.directory.resolve()
        target = (root / f"{digest}.png").resolve()
        if target.parent != root or not target.is_file():
            return None
        return target

    def read(self, digest: str) -> bytes | None:
        target = self.path(digest)
        if target is None:
            return None
        try:
            return target.read_bytes()
        except OSError:
            return None

    def prune(self, *, max_charts: int, max_age_days: float, now: float | None = None) -> int:
        """Delete charts past max_age_days, then the oldest beyond max_charts; returns how many."""
        if not self.directory.is_dir():
            return 0
        cutoff = (time.time() if now is None else now) - max_age_days * _SECONDS_PER_DAY
        charts: list[tuple[float, Path]] = []
        for entry in os.scandir(self.directory):
            if not entry.name.endswith(".png") or not entry.is_file(follow_symlinks=False):
                continue
            try:
                charts.append((entry.stat().st_mtime, Path(entry.path)))
            except FileNotFoundError:  # deleted meanwhile
                continue
        charts.sort()
        doomed = [p for mtime, p in charts if mtime < cutoff]
        kept = len(charts) - len(doomed)
        if kept > max_charts:
            doomed += [p for _, p in charts[len(doomed) : len(doomed) + kept - max_charts]]
        for p in doomed:
            p.unlink(missing_ok=True)
        return len(doomed)
