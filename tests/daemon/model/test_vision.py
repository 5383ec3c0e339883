"""The CLIP engine as strategy's VisionModel: the same calibrated outputs as the engine, in order."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.model.vision import ClipVision
from tests.vlm_engine.clip_helpers import tiny_bundle, window
from vlm_engine.infer import InferenceConfig, InferenceEngine

CONFIG = InferenceConfig(device="cpu", warmup_batches=1, max_batch=4)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> InferenceEngine:
    root = tmp_path_factory.mktemp("bundle")
    tiny_bundle(root / "a", seed=0)
    return InferenceEngine.load(root / "a", config=CONFIG)


def test_clip_vision_when_windows_then_vision_scores_match_the_engine_and_render_time_adds_up(
    engine: InferenceEngine,
) -> None:
    vision = ClipVision(engine=engine)
    scores = vision.score_windows([window(40, seed=i) for i in range(3)])
    direct = engine.score_batch([window(40, seed=i) for i in range(3)])
    assert scores.pattern_names == engine.classes
    assert scores.p_up.shape == (3,)
    assert np.allclose(scores.p_up, direct.p_up, atol=1e-5)
    assert scores.embeddings.shape == direct.embeddings.shape
    first = vision.render_seconds
    assert first > 0
    vision.score_windows([window(40, seed=7)])
    assert vision.render_seconds > first
