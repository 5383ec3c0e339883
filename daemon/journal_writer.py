"""A group-committing writer thread: the journal rows that are not on the order path.

The order path commits only its write-ahead intents (daemon/journal.py, record_orders_ahead) and
hands the rest of the batch (signals, decisions, fills, events, positions) to this queue. The
thread commits what is queued in one transaction, after letting a group gather for up to
LINGER_SECONDS; once a group has gathered (CARRY_AT, CARRY_AFTER_SECONDS: before the thread's
linger ends), the order path's own commit takes what is queued into its transaction (older rows
first), so a backtest or a busy daemon pays one commit per batch with orders, the queued tables'
pages once per group, and no hand-over between threads. A batch never waits for the thread; reads and the synchronous writes
hurry it and wait until the queue is empty, so they see every row queued before them. A failed
commit is sticky: the thread stops, and the journal's next write raises it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from vlm_engine.thread_policy import lower_calling_thread

Item = TypeVar("Item")

# Queued batches per transaction of the thread at most: the order path waits for at most one.
MAX_GROUP = 256
# How long queued rows wait for the thread: it commits a group once its oldest row has been queued
# this long without the order path taking it (a read never waits for it: it hurries the thread).
# Rows off the order path reach the disk this much later. A live bar interval is a minute, so the
# thread commits most live batches' rows; between a backtest's orders lie a few bars, so the
# order path's commits carry them all and the thread (its GIL time, its commits) stays out.
LINGER_SECONDS = 0.05
# The order path's commit carries what is queued (older rows first, in its transaction) only once
# a group has gathered: half of MAX_GROUP batches, or the oldest row has waited half the linger,
# so that the order path takes the rows before the thread would. Each table a commit touches is
# a page or two written to the WAL: carried on every commit, the queued rows (signals, decisions,
# fills, events, positions) cost each order commit ~10 pages; carried every few dozen commits,
# the table pages are shared. The rows reach the disk as soon as before (within the linger).
CARRY_AT = MAX_GROUP // 2
CARRY_AFTER_SECONDS = LINGER_SECONDS / 2


class GroupWriter(threading.Thread, Generic[Item]):
    """Calls commit(self) on its own thread once items are queued; commit (or the order path,
    under the journal's write lock) takes them with take(). Idle: nothing queued and no commit running."""

    def __init__(self, *, name: str, commit: Callable[[GroupWriter[Item]], None]) -> None:
        super().__init__(name=name, daemon=True)
        self._commit = commit
        self._queue: deque[Item] = deque()
        self._changed = threading.Condition()
        self._writing = False
        self._sleeping = False  # waiting for a first item: only then does submit() notify
        self._since = 0.0  # time.monotonic() when the queue last went from empty to not empty
        self._hurry = False  # a reader waits: commit now, without lingering
        self._stopping = False
        self.failure: BaseException | None = None

    def submit(self, item: Item) -> None:
        # deque.append is atomic; the Condition (a lock round trip and a notify) is taken only
        # when this item ends an empty queue and the thread sleeps. It sets _sleeping before it
        # last looks at the queue, so either it sees this item or this call sees it sleeping.
        # Once notified it sleeps on until it has the GIL: later items find the queue not empty
        # and notify no more (each notify cost the order path a lock round trip).
        queue = self._queue
        if queue:
            queue.append(item)
            return
        self._since = time.monotonic()
        queue.append(item)
        if self._sleeping:
            with self._changed:
                self._changed.notify_all()

    def take(self, limit: int | None = None) -> list[Item]:
        """The oldest queued items (all, or up to limit); call with the journal's write lock
        held, so that what one caller takes is written before what the next one takes."""
        queue = self._queue
        count = len(queue) if limit is None else min(len(queue), limit)
        return [queue.popleft() for _ in range(count)]

    def ripe(self) -> bool:
        """Whether the order path's commit should carry the queue: CARRY_AT batches queued, or
        the oldest has waited CARRY_AFTER_SECONDS (an empty queue is never ripe)."""
        queue = self._queue
        return bool(queue) and (
            len(queue) >= CARRY_AT or time.monotonic() - self._since >= CARRY_AFTER_SECONDS
        )

    def fail(self, failure: BaseException) -> None:
        """Make a failure of the order path's commit of queued rows sticky, as the thread's own
        would be: the rows it took are lost, the thread ends, the next write raises it."""
        with self._changed:
            if self.failure is None:
                self.failure = failure
            self._queue.clear()
            self._changed.notify_all()

    def wait_idle(self) -> None:
        """Return once everything submitted so far is committed (or the writer has failed)."""
        with self._changed:
            self._hurry = True
            self._changed.notify_all()
            self._changed.wait_for(self._idle)

    def stop(self) -> None:
        """Commit what is queued, then end the thread."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self.is_alive():
            self.join()

    def run(self) -> None:
        lower_calling_thread()  # nothing an order waits for: the batch's threads come first
        changed = self._changed
        while True:
            with changed:
                self._sleeping = True
                changed.wait_for(lambda: bool(self._queue) or self._stopping or self._failed())
                self._sleeping = False
                # Let a group gather: a commit per batch would cost more than the batch.
                self._linger()
                self._hurry = False
                if self.failure is not None:
                    return
                if not self._queue:
                    if self._stopping:
                        return  # stopping, and nothing left
                    changed.notify_all()  # the order path took everything: idle
                    continue
                self._writing = True
            try:
                self._commit(self)
            except BaseException as e:  # sticky: the journal raises it on its next write
                with changed:
                    self.failure = e
                    self._queue.clear()
                    self._writing = False
                    changed.notify_all()
                return
            with changed:
                self._writing = False
                if self._queue:
                    self._hurry = True  # more than one group was waiting: no second linger
                changed.notify_all()

    def _linger(self) -> None:
        """Wait (holding the Condition) until the oldest queued row has waited LINGER_SECONDS, a
        reader hurries the thread, it stops, or a full group is queued. Rows the order path takes
        meanwhile restart the wait from the next row queued."""
        changed = self._changed
        while not (self._hurry or self._stopping or len(self._queue) >= MAX_GROUP):
            if not self._queue:
                return
            left = self._since + LINGER_SECONDS - time.monotonic()
            if left <= 0:
                return
            changed.wait(left)

    def _failed(self) -> bool:
        return self.failure is not None

    def _idle(self) -> bool:
        return self.failure is not None or not (self._queue or self._writing)
