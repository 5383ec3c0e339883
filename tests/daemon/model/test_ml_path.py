"""The ML order path with CLIP running while the features are computed (MLScorer.model_rows over
ClipVision.start) gives bit-identical signals and XGBoost rows to the sequential path it replaced:
features, then every chunk through the pool, on the same windows; the engine's chunks are scored
as before whichever thread (a pool thread or the caller) takes them, a join never waits for a
pool thread that has brought no work, and a chart that cannot be drawn fails its batch's join
without leaving a pool thread waiting for charts that will never come."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import msgspec
import numpy as np
import pytest

from daemon.model.loader import LoadedBundle, load_bundle
from daemon.model.vision import ClipVision
from strategy.bars import Window
from strategy.ml_scorer import StartedVision, VisionScores
from tests.daemon.ml_helpers import quick_bundle, sample_windows
from vlm_engine.infer import ChartEngine, ClipBatch, InferenceConfig
from vlm_engine.infer import engine as engine_module
from vlm_engine.infer.engine import _ChunkQueue, _pool
from vlm_engine.infer.onnx_export import INT8_FILE
from vlm_engine.render import ChartInputError

SYMBOLS = tuple(f"S{i}" for i in range(30))  # two chunks (19 and 11), taken in turn by two threads


@pytest.fixture(scope="module")
def models() -> LoadedBundle:
    bundle = quick_bundle()
    # INT8 (dynamic) is the runtime whose scores depend on a chart's batch-mates
    runtime = "onnx-int8" if (bundle / INT8_FILE).is_file() else "onnx"
    config = InferenceConfig(device="cpu", threads=1, workers=2, warmup_batches=1, runtime=runtime)
    return load_bundle(bundle, inference=config)


def sequential_scores(engine: ChartEngine, windows: Sequence[Window]) -> VisionScores:
    """start_batch's chunks drawn and embedded one after another in this thread (what the pool
    ran), read out once on the whole batch."""
    need = engine.spec.bars_needed
    charts = [w.tail(need) for w in windows]
    embeddings = np.concatenate(
        [engine.embed(engine.render(charts[rows])) for rows in engine._batch_chunks(len(charts))]
    )
    probs, p_up = engine.read_out(embeddings)
    return VisionScores(
        p_up=p_up.astype(np.float64),
        pattern_probs=probs.astype(np.float64),
        pattern_names=engine.classes,
        embeddings=embeddings.astype(np.float64),
    )


class SequentialVision:
    """A VisionModel without start(): model_rows scores it after the features, as it used to."""

    def __init__(self, engine: ChartEngine) -> None:
        self.engine = engine

    def score_windows(self, windows: Sequence[Window]) -> VisionScores:
        return sequential_scores(self.engine, windows)


def batches(symbols: tuple[str, ...] = SYMBOLS) -> list[list[Window]]:
    windows = sample_windows(60, seed=5, symbols=symbols)
    by_ts: dict[int, list[Window]] = {}
    for w in windows:
        by_ts.setdefault(int(w.timestamps[-1]), []).append(w)
    return [b for b in by_ts.values() if len(b) == len(symbols)][-6:]


def assert_same_path(models: LoadedBundle, windows_batches: list[list[Window]]) -> None:
    overlapped = models.scorer()
    sequential = models.scorer(vision=SequentialVision(models.engine))
    assert isinstance(overlapped.vision, StartedVision)
    assert not isinstance(sequential.vision, StartedVision)
    for windows in windows_batches:
        new_signals, new_left = overlapped.score_deferred(windows)
        old_signals, old_left = sequential.score_deferred(windows)
        assert new_signals == old_signals
        assert new_left is not None
        assert old_left is not None
        assert np.array_equal(new_left.x, old_left.x, equal_nan=True)
        assert overlapped.finish(new_signals, new_left) == sequential.finish(old_signals, old_left)


def test_ml_path_when_clip_overlaps_the_features_then_signals_bit_identical(
    models: LoadedBundle,
) -> None:
    found = batches()
    assert len(found) >= 3
    assert_same_path(models, found)


def test_ml_path_when_a_window_is_unusable_then_the_usable_ones_are_scored_alone_as_before(
    models: LoadedBundle,
) -> None:
    found = batches()
    bad = found[-1][3]
    close = bad.close.copy()
    close[-1] = 1e308  # its log-return overflows: the row is refused, the rest trade
    broken = [*found[-1][:3], msgspec.structs.replace(bad, close=close), *found[-1][4:]]
    signals, _ = models.scorer().score_deferred(broken)
    assert signals[3].confidence == 0.0
    assert "non_finite_features" in signals[3].reasons[0]
    assert_same_path(models, [broken])


def test_engine_when_the_caller_scores_the_last_chunk_then_rows_equal_chunk_by_chunk(
    models: LoadedBundle,
) -> None:
    engine = models.engine
    assert engine.workers == 2
    windows = batches()[-1]
    join = engine.start_batch(windows)
    batch = join()
    expected = sequential_scores(engine, windows)
    assert np.array_equal(batch.p_up.astype(np.float64), expected.p_up)
    assert np.array_equal(batch.embeddings.astype(np.float64), expected.embeddings)
    assert [len(c) for c in batch.images] == [19, 11]  # the caller's chunk is the smaller
    vision = ClipVision(engine=engine)
    assert np.array_equal(vision.score_windows(windows).pattern_probs, expected.pattern_probs)


def test_engine_when_more_chunks_than_workers_then_rows_equal_chunk_by_chunk(
    models: LoadedBundle,
) -> None:
    engine = models.engine
    images = engine.render([w.tail(engine.spec.bars_needed) for w in batches()[-1]] * 12)
    chunks = engine._chunks(len(images))
    assert len(chunks) > engine.workers  # 144 charts: 3 chunks of at most max_batch (64)
    expected = np.concatenate([engine.embed(images[rows]) for rows in chunks])
    batch = engine.score_images(images)
    assert np.array_equal(batch.embeddings, expected)
    assert sum(len(c) for c in batch.images) == len(images)


def test_engine_when_every_pool_thread_is_busy_then_the_caller_scores_every_chunk_without_waiting(
    models: LoadedBundle,
) -> None:
    engine = models.engine
    windows = batches()[-1]
    expected = sequential_scores(engine, windows)
    release = threading.Event()
    blockers = [_pool(engine.workers).submit(release.wait) for _ in range(engine.workers)]
    out: list[object] = []
    try:
        joined = threading.Thread(target=lambda: out.append(engine.start_batch(windows)()))
        joined.start()
        joined.join(timeout=120)  # before: the join waited for the busy pool, here for ever
        finished = not joined.is_alive()
    finally:
        release.set()
        for blocker in blockers:
            blocker.result()
    assert finished, "the join waited for a pool thread that never took a chunk"
    batch = out[0]
    assert isinstance(batch, ClipBatch)
    assert [len(c) for c in batch.images] == [19, 11]
    assert np.array_equal(batch.p_up.astype(np.float64), expected.p_up)
    assert np.array_equal(batch.pattern_probs.astype(np.float64), expected.pattern_probs)


def test_engine_when_a_batch_starts_then_the_caller_embeds_its_own_chunk_before_the_join(
    models: LoadedBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = models.engine
    windows = batches()[-1]
    expected = sequential_scores(engine, windows)
    embed, calls = engine.embed, []

    def spied(images: np.ndarray) -> np.ndarray:
        calls.append((threading.get_ident(), len(images)))
        return embed(images)

    monkeypatch.setattr(engine, "embed", spied)
    release = threading.Event()  # the pool is busy: whatever is embedded now, the caller did
    blockers = [_pool(engine.workers).submit(release.wait) for _ in range(engine.workers)]
    try:
        join = engine.start_batch(windows)
        before_join = list(calls)
        batch = join()
    finally:
        release.set()
        for blocker in blockers:
            blocker.result()
    # the caller's own chunk (the last, the smaller) was embedded before start_batch returned,
    # so the features that follow overlap the pool's chunk, not the caller's
    assert before_join == [(threading.get_ident(), 11)]
    assert [k for _, k in calls] == [11, 19]  # the busy pool's chunk too, at the join
    assert [len(c) for c in batch.images] == [19, 11]
    assert np.array_equal(batch.embeddings.astype(np.float64), expected.embeddings)


def test_engine_when_a_batch_starts_then_the_pools_chunks_are_drawn_first_and_the_callers_after(
    models: LoadedBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = models.engine
    windows = batches()[-1]
    charts = [w.tail(engine.spec.bars_needed) for w in windows]
    whole = engine.render(charts)
    expected = sequential_scores(engine, windows)
    render, embed, calls = engine.render, engine.embed, []

    def drawn(items: Sequence[object], *, out: np.ndarray | None = None) -> np.ndarray:
        calls.append(("render", threading.get_ident(), len(items)))
        return render(items, out=out)  # type: ignore[arg-type]

    def embedded(images: np.ndarray) -> np.ndarray:
        calls.append(("embed", threading.get_ident(), len(images)))
        return embed(images)

    monkeypatch.setattr(engine, "render", drawn)
    monkeypatch.setattr(engine, "embed", embedded)
    release = threading.Event()  # the pool is busy: every call below is the caller's
    blockers = [_pool(engine.workers).submit(release.wait) for _ in range(engine.workers)]
    me = threading.get_ident()
    try:
        join = engine.start_batch(windows)
        before_join = list(calls)
        batch = join()
    finally:
        release.set()
        for blocker in blockers:
            blocker.result()
    # the pool's chunk is drawn and handed out before the caller draws its own (the pool embeds
    # while the caller draws), and the caller's chunk is embedded before start_batch returns
    assert before_join == [("render", me, 19), ("render", me, 11), ("embed", me, 11)]
    assert calls[3:] == [("embed", me, 19)]
    assert np.array_equal(np.concatenate(batch.images), whole)  # pixel-identical charts
    assert np.array_equal(batch.embeddings.astype(np.float64), expected.embeddings)
    assert batch.render_seconds > 0


class _PoolTakesAll(_ChunkQueue):
    """A chunk queue that never hands the caller a chunk: the pool takes every one."""

    def take(self, *, last: bool = False) -> int | None:
        return None if last else super().take()


def test_engine_when_the_pool_takes_the_callers_chunk_then_the_pool_draws_it(
    models: LoadedBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = models.engine
    windows = batches()[-1]
    whole = engine.render([w.tail(engine.spec.bars_needed) for w in windows])
    expected = sequential_scores(engine, windows)
    render, drawers = engine.render, []

    def drawn(items: Sequence[object], *, out: np.ndarray | None = None) -> np.ndarray:
        drawers.append((threading.get_ident(), len(items)))
        return render(items, out=out)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "render", drawn)
    monkeypatch.setattr(engine_module, "_ChunkQueue", _PoolTakesAll)
    batch = engine.start_batch(windows)()
    assert drawers[0] == (threading.get_ident(), 19)
    assert drawers[1][0] != threading.get_ident()  # the caller's chunk, drawn by a pool thread
    assert drawers[1][1] == 11
    assert np.array_equal(np.concatenate(batch.images), whole)
    assert np.array_equal(batch.embeddings.astype(np.float64), expected.embeddings)


def test_engine_when_a_batch_is_small_then_the_caller_embeds_it_in_one_chunk_without_the_pool(
    models: LoadedBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = models.engine
    windows = batches(SYMBOLS[:12])[-1]  # below MIN_CHARTS_TO_SPLIT: hand-offs cost more
    embed, calls = engine.embed, []

    def spied(images: np.ndarray) -> np.ndarray:
        calls.append((threading.get_ident(), len(images)))
        return embed(images)

    monkeypatch.setattr(engine, "embed", spied)
    batch = engine.start_batch(windows)()
    assert calls == [(threading.get_ident(), 12)]
    assert [len(c) for c in batch.images] == [12]
    monkeypatch.undo()
    charts = engine.render([w.tail(engine.spec.bars_needed) for w in windows])
    assert np.array_equal(batch.embeddings, engine.embed(charts))


def test_engine_when_a_chunk_fails_then_the_join_raises_and_no_thread_is_left_scoring(
    models: LoadedBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = models.engine
    embed, calls = engine.embed, []

    def failing(images: np.ndarray) -> np.ndarray:
        calls.append(len(images))
        if len(calls) == 2:
            msg = "chunk failed"
            raise ValueError(msg)
        return embed(images)

    monkeypatch.setattr(engine, "embed", failing)
    join = engine.start_batch(batches()[-1])
    with pytest.raises(ValueError, match="chunk failed"):
        join()
    scored = len(calls)
    assert scored <= 3  # the chunks after the failure were not started
    monkeypatch.undo()
    assert len(engine.score_batch(batches()[-1])) == len(SYMBOLS)  # the engine still serves
    assert len(calls) == scored  # nothing of the failed batch ran on after its join


def _undrawable(window: Window) -> Window:
    """The window with its last bar's high below its low: the renderer refuses it."""
    high = window.high.copy()
    high[-1] = window.low[-1] - 1.0
    return msgspec.structs.replace(window, high=high)


@pytest.mark.parametrize("bad", [0, len(SYMBOLS) - 1], ids=["first_chunk", "last_chunk"])
def test_engine_when_a_chart_cannot_be_drawn_then_the_join_raises_and_no_pool_thread_waits(
    models: LoadedBundle, bad: int
) -> None:
    engine = models.engine
    windows = list(batches()[-1])
    windows[bad] = _undrawable(windows[bad])
    join = engine.start_batch(windows)  # errors are the join's, never start_batch's
    out: list[BaseException] = []

    def joining() -> None:
        try:
            join()
        except ChartInputError as e:
            out.append(e)

    joined = threading.Thread(target=joining, daemon=True)
    joined.start()
    joined.join(timeout=120)  # a pool thread left waiting for the undrawn chunk hangs the join
    assert not joined.is_alive(), "the join waited for a pool thread waiting for charts"
    assert len(out) == 1
    assert "S" in str(out[0])
    idle = [_pool(engine.workers).submit(lambda: True) for _ in range(engine.workers)]
    assert all(f.result(timeout=60) for f in idle)  # every pool thread is free again
    good = batches()[-1]
    expected = sequential_scores(engine, good)
    assert np.array_equal(engine.score_batch(good).p_up.astype(np.float64), expected.p_up)
