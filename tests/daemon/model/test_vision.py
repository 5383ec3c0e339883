"""The CLIP engine as strategy's VisionModel: the same calibrated outputs as the engine, in order."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from daemon.model.vision import ClipVision
from strategy.bars import Window
from tests.vlm_engine.clip_helpers import tiny_bundle, window
from vlm_engine.infer import InferenceConfig, InferenceEngine

CONFIG = InferenceConfig(device="cpu", warmup_batches=1, max_batch=4)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> InferenceEngine:
    root = tmp_path_factory.mktemp("bundle")
    tiny_bundle(root / "a", seed=0)
    return InferenceEngine.load(root / "a", config=CONFIG)


def _strategy_window(n: int, seed: int = 0, symbol: str = "SIMA") -> Window:
    w = window(n, seed=seed, symbol=symbol)
    return Window(
        symbol=symbol,
        ts=datetime.fromtimestamp(int(w.ts[-1]), tz=UTC),
        bar_seconds=60,
        timestamps=w.ts,
        open=w.open,
        high=w.high,
        low=w.low,
        close=w.close,
        volume=w.volume,
    )


def test_clip_vision_when_windows_then_vision_scores_match_the_engine_and_render_time_adds_up(
    engine: InferenceEngine,
) -> None:
    vision = ClipVision(engine=engine)
    scores = vision.score_windows([_strategy_window(40, i) for i in range(3)])
    direct = engine.score_batch([window(40, seed=i) for i in range(3)])
    assert scores.pattern_names == engine.classes
    assert scores.p_up.shape == (3,)
    assert np.allclose(scores.p_up, direct.p_up, atol=1e-5)
    assert scores.embeddings.shape == direct.embeddings.shape
    first = vision.render_seconds
    assert first > 0
    vision.score_windows([_strategy_window(40, 7)])
    assert vision.render_seconds > first
