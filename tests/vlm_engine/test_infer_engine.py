from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from structlog.testing import capture_logs

from strategy.bars import Window
from strategy.clip_scorer import ClipScorer, ClipScorerConfig
from tests.vlm_engine.clip_helpers import SPEC, tiny_bundle, window
from vlm_engine.bundle import BundleError, load_bundle
from vlm_engine.calibrate.evaluate import apply_calibration, raw_scores
from vlm_engine.infer import InferenceConfig, InferenceEngine, ModelServer
from vlm_engine.infer.engine import MIN_CHARTS_PER_WORKER, resolve_workers

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


def test_swap_when_new_bundle_is_valid_then_live_switches(bundles: tuple[Path, Path]):
    server = ModelServer.load(bundles[0], config=CONFIG)
    old = server.live.bundle_id
    result = server.swap(bundles[1])
    assert result.ok
    assert result.previous_bundle_id == old
    assert server.live.bundle_id == result.bundle_id != old
    assert server.score_batch([window()]).live.bundle_id == result.bundle_id


def test_swap_when_new_bundle_is_corrupt_then_old_keeps_serving_and_failure_is_logged(
    bundles: tuple[Path, Path], tmp_path: Path
):
    broken = tmp_path / "broken"
    shutil.copytree(bundles[1], broken)
    (broken / "calibration.json").write_text("{}")
    server = ModelServer.load(bundles[0], config=CONFIG)
    old = server.live.bundle_id
    with capture_logs() as logs:
        result = server.swap(broken)
    assert not result.ok
    assert "calibration.json" in result.error
    assert server.live.bundle_id == old
    assert any(e["event"] == "bundle.swap_failed" for e in logs)
    assert server.score_batch([window()]).live.bundle_id == old


def test_load_when_spec_hash_differs_then_bundle_error(bundles: tuple[Path, Path]):
    with pytest.raises(BundleError, match="trained on chart spec"):
        ModelServer.load(bundles[0], config=CONFIG, spec_hash="0" * 16)


def test_shadow_when_set_then_scored_beside_live_and_measured(bundles: tuple[Path, Path]):
    server = ModelServer.load(bundles[0], config=CONFIG, shadow=bundles[1])
    served = server.score_batch([window(seed=i) for i in range(3)])
    assert served.shadow is not None
    assert served.shadow.bundle_id != served.live.bundle_id
    assert server.shadow_stats.charts == 3
    assert 0.0 <= server.shadow_stats.direction_agreement <= 1.0
    server.set_shadow(None)
    assert server.score_batch([window()]).shadow is None


def _strategy_window(n: int, seed: int = 0, symbol: str = "SIMA") -> Window:
    w = window(n, seed=seed, symbol=symbol)
    return Window(
        symbol=symbol,
        bar_seconds=60,
        timestamps=w.timestamps,
        open=w.open,
        high=w.high,
        low=w.low,
        close=w.close,
        volume=w.volume,
    )


def test_clip_scorer_when_windows_then_one_signal_each_in_order_and_short_ones_neutral(
    bundles: tuple[Path, Path],
):
    server = ModelServer.load(bundles[0], config=CONFIG, shadow=bundles[1])
    scorer = ClipScorer(server=server, config=ClipScorerConfig(min_confidence=0.0))
    windows = [
        _strategy_window(40, 0, "AAA"),
        _strategy_window(SPEC.bars_needed - 1, 1, "BBB"),
        _strategy_window(40, 2, "CCC"),
    ]
    signals = scorer.score(windows)
    assert [s.symbol for s in signals] == ["AAA", "BBB", "CCC"]
    assert signals[1].reasons == ("short_window",)
    assert signals[1].confidence == 0.0
    live = server.live.score_batch([window(40, seed=0, symbol="AAA")])
    assert signals[0].p_up == pytest.approx(float(live.p_up[0]), abs=1e-5)
    assert scorer.blocking
    assert [s.scorer for s in scorer.last_shadow] == ["clip_shadow", "clip_shadow"]


def test_clip_vision_when_windows_then_vision_scores_match_live_engine(bundles: tuple[Path, Path]):
    from strategy.clip_scorer import ClipVision

    server = ModelServer.load(bundles[0], config=CONFIG)
    scores = ClipVision(server=server).score_windows([_strategy_window(40, i) for i in range(3)])
    live = server.live.score_batch([window(40, seed=i) for i in range(3)])
    assert scores.pattern_names == server.live.classes
    assert scores.p_up.shape == (3,)
    assert np.allclose(scores.p_up, live.p_up, atol=1e-5)
    assert scores.embeddings.shape == live.embeddings.shape


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


def test_chunks_when_small_batch_then_no_worker_gets_fewer_than_the_minimum(
    bundles: tuple[Path, Path],
):
    engine = InferenceEngine.load(bundles[0], config=InferenceConfig(device="cpu", workers=4))
    chunks = engine._chunks(MIN_CHARTS_PER_WORKER + 1)
    assert [c.stop - c.start for c in chunks] == [MIN_CHARTS_PER_WORKER, 1]
    big = engine._chunks(1000)  # max_batch still caps a chunk
    assert max(c.stop - c.start for c in big) == engine.config.max_batch
    assert big[-1].stop == 1000


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
