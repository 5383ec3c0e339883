"""Threads whose work no order waits for (the journal's writer, the WAL checkpointers, the
explainer) run BACKGROUND_NICE nicer than the thread that started them, as the kernel reports it
(/proc/self/task/<tid>/stat); the thread that opened them keeps its own nice value."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from daemon.execution.paper import PaperExecution
from daemon.explain.config import ExplainConfig
from daemon.explain.worker import Explainer
from daemon.journal import Journal
from strategy.sim_broker import SimBrokerConfig
from vlm_engine.thread_policy import BACKGROUND_NICE, lower_calling_thread


def _nice(tid: int) -> int:
    """The thread's nice value from the kernel's stat line (field 19)."""
    with open(f"/proc/self/task/{tid}/stat") as f:
        after_name = f.read().rsplit(")", 1)[1].split()  # the name may hold spaces
    return int(after_name[16])  # fields from the 3rd on


def _thread(prefix: str) -> int:
    (tid,) = [
        t.native_id
        for t in threading.enumerate()
        if t.name.startswith(prefix) and t.native_id is not None
    ]
    return tid


def _settled_nice(tid: int, wanted: int) -> int:
    """The thread's nice value once it is `wanted` (the thread lowers itself when it starts), or
    as it is after a few seconds."""
    deadline = time.monotonic() + 10
    while (nice := _nice(tid)) != wanted and time.monotonic() < deadline:
        time.sleep(0.01)
    return nice


def _lowered(nice: int) -> int:
    return min(19, nice + BACKGROUND_NICE)


def test_lower_calling_thread_when_called_then_that_thread_and_its_children_are_nicer() -> None:
    main = threading.get_native_id()
    base = _nice(main)
    seen: dict[str, int | bool] = {}

    def child() -> None:
        seen["child"] = _nice(threading.get_native_id())

    def work() -> None:
        seen["lowered"] = lower_calling_thread()
        seen["nice"] = _nice(threading.get_native_id())
        started = threading.Thread(target=child)  # a thread inherits its creator's nice value
        started.start()
        started.join()

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()

    assert seen == {"lowered": True, "nice": _lowered(base), "child": _lowered(base)}
    assert _nice(main) == base


def test_journal_when_open_then_its_writer_and_checkpointer_are_nicer_than_the_opener(
    tmp_path: Path,
) -> None:
    main = threading.get_native_id()
    base = _nice(main)
    with Journal(tmp_path / "journal.sqlite", checkpoint_seconds=0.01) as journal:
        journal.record_orders_ahead(kv={"cash": "1.0"})
        journal.flush()
        writer = _settled_nice(_thread("journal-writer:journal.sqlite"), _lowered(base))
        checkpointer = _settled_nice(_thread("wal-checkpoint:journal.sqlite"), _lowered(base))

    assert (writer, checkpointer) == (_lowered(base), _lowered(base))
    assert _nice(main) == base


def test_paper_venue_when_open_then_its_checkpointer_is_nicer_than_the_opener(
    tmp_path: Path,
) -> None:
    main = threading.get_native_id()
    base = _nice(main)
    with PaperExecution(config=SimBrokerConfig(), path=tmp_path / "venue.sqlite"):
        checkpointer = _settled_nice(_thread("wal-checkpoint:venue.sqlite"), _lowered(base))

    assert checkpointer == _lowered(base)
    assert _nice(main) == base


def test_explainer_when_started_then_its_thread_is_nicer_than_the_opener(tmp_path: Path) -> None:
    main = threading.get_native_id()
    base = _nice(main)
    with Explainer(config=ExplainConfig(), state_dir=tmp_path):
        explainer = _settled_nice(_thread("explainer"), _lowered(base))

    assert explainer == _lowered(base)
    assert _nice(main) == base
