"""scorer.runtime: the daemon's one choice of CLIP runtime, validated with the config and honoured at load."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from daemon.config import decode_config
from daemon.errors import ConfigError
from daemon.model.active import load_active
from daemon.model.slot import daemon_load_options
from strategy.bars import BarStoreConfig
from tests.daemon.ml_helpers import WINDOW, quick_bundle, sample_windows
from vlm_engine.bundle import read_card


def test_config_when_runtime_unknown_then_one_line_error_naming_the_key() -> None:
    assert decode_config("{}").scorer.runtime == "auto"
    assert decode_config("scorer: {runtime: onnx-int8}").scorer.runtime == "onnx-int8"
    with pytest.raises(ConfigError, match=r"scorer\.runtime") as info:
        decode_config("scorer: {runtime: tensorrt}", source="cfg.yaml")
    assert "\n" not in str(info.value)


def test_load_when_built_bundle_and_runtime_onnx_then_scorer_serves_clip_on_onnx() -> None:
    assert "onnx/image_fp32.onnx" in read_card(quick_bundle()).files  # model bootstrap exported it
    cfg = decode_config(f"bars: {{window: {WINDOW}}}\nscorer: {{kind: ml, runtime: onnx}}")
    assert cfg.bars == BarStoreConfig(window=WINDOW)
    with capture_logs() as logs:
        scorer = load_active(quick_bundle(), daemon_load_options(cfg)).scorer
    chosen = [e for e in logs if e["event"] == "engine.runtime_chosen"]
    assert [(e["requested"], e["chosen"]) for e in chosen] == [("onnx", "onnx")]
    assert scorer.vision.engine.runtime == "onnx"  # type: ignore[attr-defined]
    signals = scorer.score(sample_windows()[:4])
    assert all(0.0 <= s.p_up <= 1.0 for s in signals)


def test_research_load_when_runtime_auto_then_fixed_order_untimed_and_daemon_load_times() -> None:
    from daemon.backtest import clip_options, runtime_meta
    from daemon.model.contenders import bundle_contenders

    cfg = decode_config(f"bars: {{window: {WINDOW}}}\nscorer: {{runtime: auto, threads: 1}}")
    card = read_card(quick_bundle())
    expected = "onnx-int8" if "onnx/image_int8.onnx" in card.files else "onnx"
    research = clip_options(cfg, None)
    assert (research.runtime, research.auto_rule) == ("auto", "fixed-order")
    with capture_logs() as logs:
        _, info, _ = bundle_contenders(quick_bundle(), cfg.bars, research)
    assert info.runtime == expected
    assert [e["resolved"] for e in logs if e["event"] == "engine.runtime_resolved"] == [expected]
    chosen = [e for e in logs if e["event"] == "engine.runtime_chosen"]
    assert [(e["requested"], e["chosen"], e["ms_per_chart"]) for e in chosen] == [
        ("auto", expected, {})  # never timed
    ]
    assert clip_options(cfg, "torch").runtime == "torch"  # --runtime overrides
    assert runtime_meta("auto", expected)["clip_runtime_requested"].startswith("auto (fixed order")
    daemon = daemon_load_options(cfg)
    assert (daemon.runtime, daemon.auto_rule) == ("auto", "timed")
    with capture_logs() as logs:
        load_active(quick_bundle(), daemon)
    chosen = [e for e in logs if e["event"] == "engine.runtime_chosen"]
    assert len(chosen) == 1
    assert len(chosen[0]["ms_per_chart"]) >= 2  # the daemon's auto times every candidate
    assert not [e for e in logs if e["event"] == "engine.runtime_resolved"]
