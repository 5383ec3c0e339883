from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.vlm_engine.clip_helpers import tiny_bundle, window
from vlm_engine.bundle import BundleError, load_bundle
from vlm_engine.calibrate.evaluate import apply_calibration, raw_scores
from vlm_engine.infer import InferenceConfig, InferenceEngine
from vlm_engine.infer.engine import (
    CALLER_SHARE,
    CHUNKS_PER_WORKER,
    MIN_CHARTS_PER_WORKER,
    resolve_workers,
)

CONFIG = InferenceConfig(device="cpu", warmup_batches=1, max_batch=4)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bundles")
    tiny_bundle(root / "a", seed=0)
    tiny_bundle(root / "b", seed=1)
    return root / "a", root / "b"


def test_score_batch_when_windows_then_one_row_each_with_probabilities(bundles: tuple[Path, Path]):
    engine = InferenceEngine.load(bundles[0], config=CONFIG)
    batch = engine.score_batch([window(seed=i) for i in range(6)])  # more than max_batch: chunked
    assert len(batch) == 6
    assert batch.pattern_probs.shape == (6, len(engine.classes))
    assert np.allclose(batch.pattern_probs.sum(axis=1), 1.0, atol=1e-5)
    assert ((batch.p_up > 0) & (batch.p_up < 1)).all()
    assert np.allclose(np.linalg.norm(batch.embeddings, axis=1), 1.0, atol=1e-4)
    row = batch.row(2)
    assert row.top_pattern in engine.classes
    assert row.p_up == pytest.approx(float(batch.p_up[2]))


def test_score_images_when_compared_with_offline_evaluation_then_same_calibrated_outputs(
    bundles: tuple[Path, Path],
):
    engine = InferenceEngine.load(bundles[0], config=CONFIG)
    images = engine.render([window(seed=i) for i in range(5)])
    served = engine.score_images(images)
    offline = load_bundle(bundles[0])
    probs, p_up = apply_calibration(
        offline.calibration, raw_scores(offline.parts, offline.prompts, images)
    )
    assert np.allclose(served.pattern_probs, probs, atol=1e-4)
    assert np.allclose(served.p_up, p_up, atol=1e-4)


def test_score_batch_when_empty_then_empty_batch(bundles: tuple[Path, Path]):
    engine = InferenceEngine.load(bundles[0], config=CONFIG)
    assert len(engine.score_batch([])) == 0


def test_load_when_spec_hash_differs_then_bundle_error(bundles: tuple[Path, Path]):
    with pytest.raises(BundleError, match="trained on chart spec"):
        InferenceEngine.load(bundles[0], config=CONFIG, spec_hash="0" * 16)


def test_score_batch_when_charts_drawn_then_render_time_reported_and_none_for_given_images(
    bundles: tuple[Path, Path],
):
    engine = InferenceEngine.load(bundles[0], config=CONFIG)
    drawn = engine.score_batch([window(seed=i) for i in range(3)])
    assert drawn.render_seconds > 0
    assert engine.score_images(engine.render([window()])).render_seconds == 0


def test_score_images_when_split_over_workers_then_rows_match_one_worker_in_order(
    bundles: tuple[Path, Path],
):
    one = InferenceEngine.load(bundles[0], config=InferenceConfig(device="cpu", workers=1))
    three = InferenceEngine.load(bundles[0], config=InferenceConfig(device="cpu", workers=3))
    images = one.render([window(seed=i) for i in range(3 * MIN_CHARTS_PER_WORKER + 1)])
    assert len(three._chunks(images.shape[0])) == 3
    a, b = one.score_images(images), three.score_images(images)
    assert np.allclose(a.embeddings, b.embeddings, atol=1e-5)
    assert np.allclose(a.p_up, b.p_up, atol=1e-5)
    assert np.allclose(a.pattern_probs, b.pattern_probs, atol=1e-5)
    assert not np.allclose(
        a.embeddings[::-1], b.embeddings, atol=1e-5
    )  # rows differ: order is checked


def test_chunks_when_small_batch_then_no_chunk_is_smaller_than_the_minimum_on_average(
    bundles: tuple[Path, Path],
):
    engine = InferenceEngine.load(bundles[0], config=InferenceConfig(device="cpu", workers=4))
    chunks = engine._chunks(MIN_CHARTS_PER_WORKER + 1)
    assert [c.stop - c.start for c in chunks] == [MIN_CHARTS_PER_WORKER + 1]
    two = engine._chunks(2 * MIN_CHARTS_PER_WORKER + 1)
    assert [c.stop - c.start for c in two] == [MIN_CHARTS_PER_WORKER + 1, MIN_CHARTS_PER_WORKER]
    many = engine._chunks(100)  # chunks taken in turn by whichever thread is free
    assert len(many) == 4 * CHUNKS_PER_WORKER
    assert many[-1].stop == 100
    big = engine._chunks(1000)  # max_batch still caps a chunk
    assert max(c.stop - c.start for c in big) == engine.config.max_batch
    assert big[-1].stop == 1000
    # start_batch's: the caller's chunk (the last) is the smaller, the rows are all covered once
    sizes = [c.stop - c.start for c in engine._batch_chunks(100)]
    assert sum(sizes) == 100
    assert len(sizes) == 4 * CHUNKS_PER_WORKER
    assert sizes[:-1] == [math.ceil(100 / (len(sizes) - 1 + CALLER_SHARE))] * (len(sizes) - 1)
    assert sizes[-1] < sizes[0]


@pytest.mark.parametrize(
    ("config", "device", "expected"),
    [
        (InferenceConfig(threads=1), "cpu", min(4, os.cpu_count() or 1)),
        (InferenceConfig(threads=0), "cpu", 1),  # torch's own intra-op threads use the cores
        (InferenceConfig(threads=1, workers=3), "cpu", 3),
        (InferenceConfig(threads=1, workers=3), "cuda", 1),
    ],
    ids=["auto_one_thread", "auto_torch_threads", "explicit", "cuda"],
)
def test_resolve_workers_when_configured_then_cores_used_once(
    config: InferenceConfig, device: str, expected: int
):
    assert resolve_workers(config, torch.device(device)) == expected
