"""A group-committing writer thread: the journal rows that are not on the order path.

The order path commits only its write-ahead intents (daemon/journal.py, record_orders_ahead) and
hands the rest of the batch (signals, decisions, fills, events, positions) to this thread, which
commits everything queued since its last commit in one transaction. A batch never waits for it;
reads and the synchronous writes wait until it is idle, so they see every row queued before them.
A failed commit is sticky: the thread stops, and the journal's next write raises it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")

MAX_GROUP = 16  # queued batches per transaction at most


class GroupWriter(threading.Thread, Generic[Item]):
    """Calls commit(items) on its own thread with the items queued since the last call; commit
    returns how many it wrote (it may stop early to let the order path in), the rest go back."""

    def __init__(self, *, name: str, commit: Callable[[list[Item]], int]) -> None:
        super().__init__(name=name, daemon=True)
        self._commit = commit
        self._queue: deque[Item] = deque()
        self._changed = threading.Condition()
        self._writing = False
        self._stopping = False
        self.failure: BaseException | None = None

    def submit(self, item: Item) -> None:
        with self._changed:
            self._queue.append(item)
            self._changed.notify_all()

    def wait_idle(self) -> None:
        """Return once everything submitted so far is committed (or the writer has failed)."""
        with self._changed:
            self._changed.wait_for(self._idle)

    def stop(self) -> None:
        """Commit what is queued, then end the thread."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self.is_alive():
            self.join()

    def run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._queue) or self._stopping)
                if not self._queue:
                    return  # stopping, and nothing left
                count = min(len(self._queue), MAX_GROUP)
                group = [self._queue.popleft() for _ in range(count)]
                self._writing = True
            try:
                written = self._commit(group)
            except BaseException as e:  # sticky: the journal raises it on its next write
                with self._changed:
                    self.failure = e
                    self._queue.clear()
                    self._writing = False
                    self._changed.notify_all()
                return
            with self._changed:
                self._queue.extendleft(reversed(group[written:]))
                self._writing = False
                self._changed.notify_all()

    def _idle(self) -> bool:
        return self.failure is not None or not (self._queue or self._writing)
