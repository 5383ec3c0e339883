from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

from daemon.cli import backtest as cli_backtest
from daemon.model.active import LoadOptions, load_active
from daemon.model.loader import BundleUnusable, load_bundle
from daemon.model.scoring import log_drift
from daemon.model.vision import CachedVision
from strategy.bars import BarStoreConfig
from strategy.drift import DriftConfig
from strategy.fusion import FusionConfig
from strategy.market_sim import SimMarketConfig, simulate_frame
from tests.daemon.ml_helpers import (
    WINDOW,
    bundle_copy,
    drop_from_card,
    quick_bundle,
    sample_windows,
)
from vlm_engine.bundle import BundleError, add_to_bundle, read_card, verify_bundle

BARS = BarStoreConfig(window=WINDOW)


def _load(path: Path, *, bars: BarStoreConfig, **options: Any) -> tuple[Any, str | None]:
    """The scorer the daemon would serve from the bundle, and its bundle id."""
    model = load_active(path, LoadOptions(bars=bars, **options))
    return model.scorer, model.bundle_id


def test_load_when_full_bundle_then_ml_scorer_signals_with_bundle_id_and_drift_monitor() -> None:
    scorer, bundle_id = _load(quick_bundle(), bars=BARS)
    windows = sample_windows()[:6]
    signals = scorer.score(windows)
    assert bundle_id == read_card(quick_bundle()).bundle_id
    assert scorer.name == "ml"
    assert scorer.drift is not None
    assert scorer.pca is not None
    assert [s.symbol for s in signals] == [w.symbol for w in windows]
    assert all(s.scorer == "ml" and 0.0 <= s.p_up <= 1.0 for s in signals)
    assert all(0.0 <= s.confidence <= 1.0 and 0.0 <= s.disagreement <= 1.0 for s in signals)


def test_load_when_bundle_built_then_card_records_xgb_fusion_and_four_holdout_aucs() -> None:
    card = read_card(quick_bundle())
    assert {"xgb/model.json", "xgb/meta.json", "fusion.json", "pca.json"} <= set(card.files)
    assert {"xgb_technical/model.json", "xgb_technical/meta.json"} <= set(card.files)
    for model in ("clip", "xgb_technical", "xgb", "fused"):
        assert f"{model}_holdout_auc" in card.metrics
    # The bootstrap selects the fusion (stacking or a clip/xgb weighting) on out-of-fold rows,
    # after mapping CLIP's P(up) onto those rows.
    fusion = card.stages["tabular"]["fusion"]
    assert fusion["method"] in ("stacking", "weighted")
    assert set(fusion["recalibrate"]) == {"clip"}
    assert any(n.startswith("clip_pc") for n in card.stages["tabular"]["feature_names"])


@pytest.mark.parametrize(("mode", "name"), [("clip", "clip"), ("xgb", "xgb")])
def test_load_when_mode_single_model_then_signal_carries_that_model_only(
    mode: str, name: str
) -> None:
    scorer, _ = _load(quick_bundle(), bars=BARS, mode=mode)  # type: ignore[arg-type]
    windows = sample_windows()[:4]
    _, probs = scorer.model_rows(windows)
    assert set(probs) == {mode}
    signals = scorer.score(windows)
    assert {s.scorer for s in signals} == {name}
    # The signal is the model's own probability, through its recalibration when it has one.
    expected = [scorer.fusion.recalibrated({mode: float(p)})[mode] for p in probs[mode]]
    assert [s.p_up for s in signals] == pytest.approx(expected)


def test_load_when_mode_xgb_then_technical_model_alone_without_clip_and_not_constant() -> None:
    models = load_bundle(quick_bundle())
    assert models.xgb_technical is not None
    assert not any(n.startswith("clip_") for n in models.xgb_technical.feature_names)
    scorer = models.scorer(mode="xgb")
    assert scorer.xgb is models.xgb_technical
    assert scorer.drift is not None
    assert scorer.drift.reference.names[-1] == "confidence"
    windows = sample_windows()
    x, probs = scorer.model_rows(windows)
    assert x.shape[1] == len(models.xgb_technical.feature_names)  # no CLIP columns computed
    signals = scorer.score(windows)
    # The signal is the model's own probability, whatever weight the fitted fusion gives it.
    assert [s.p_up for s in signals] == pytest.approx(list(probs["xgb"]))
    assert len({round(s.p_up, 6) for s in signals}) > 1


def test_load_when_technical_model_corrupt_then_refused_naming_it(tmp_path: Path) -> None:
    bundle = bundle_copy(tmp_path)
    (bundle / "xgb_technical/meta.json").write_text('{"feature_names": ["clip_p_up"]}')
    with pytest.raises(BundleUnusable, match=r"xgb_technical/meta\.json") as e:
        _load(bundle, bars=BARS)
    assert "\n" not in str(e.value)


def test_load_when_fusion_config_given_then_it_replaces_the_bundle_fusion() -> None:
    weighted = FusionConfig(method="weighted", weights={"clip": 0.2, "xgb": 0.8})
    scorer, _ = _load(quick_bundle(), bars=BARS, fusion=weighted)
    assert scorer.fusion.config.method == "weighted"
    assert scorer.fusion.weights == {"clip": 0.2, "xgb": 0.8}


def test_load_when_bundle_missing_then_one_line_error_naming_path(tmp_path: Path) -> None:
    with pytest.raises(BundleUnusable, match="no such bundle directory") as e:
        _load(tmp_path / "nope", bars=BARS)
    assert "\n" not in str(e.value)


def test_load_when_clip_only_bundle_then_refused_as_incomplete(tmp_path: Path) -> None:
    bundle = bundle_copy(tmp_path)
    drop_from_card(bundle, "xgb/model.json", "xgb/meta.json", "fusion.json", "pca.json")
    with pytest.raises(BundleUnusable, match=r"incomplete bundle, missing xgb/model.json") as e:
        _load(bundle, bars=BARS)
    assert str(e.value).startswith(str(bundle))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "name", ["xgb/model.json", "fusion.json", "pca.json", "clip/model.safetensors"]
)
def test_load_when_file_corrupt_then_refused_naming_the_file(tmp_path: Path, name: str) -> None:
    bundle = bundle_copy(tmp_path)
    (bundle / name).write_bytes(b'{"garbage": true}')
    with pytest.raises(BundleUnusable, match=re.escape(f"corrupt bundle, {name}")) as e:
        _load(bundle, bars=BARS)
    assert "\n" not in str(e.value)


def test_load_when_other_chart_spec_expected_then_refused() -> None:
    with pytest.raises(BundleUnusable, match="trained on chart spec"):
        _load(quick_bundle(), bars=BARS, spec_hash="0" * 16)


def test_load_when_daemon_window_shorter_than_bundle_needs_then_refused() -> None:
    with pytest.raises(BundleUnusable, match=r"needs windows of 32 bars.*bars\.window is 16"):
        _load(quick_bundle(), bars=BarStoreConfig(window=16))


def test_load_when_other_bar_size_then_refused() -> None:
    with pytest.raises(BundleUnusable, match="trained on 60 s bars"):
        _load(quick_bundle(), bars=BarStoreConfig(window=WINDOW, bar_seconds=300))


def test_cached_vision_when_windows_repeat_then_same_scores_and_inner_called_for_new_only() -> None:
    models = load_bundle(quick_bundle())
    inner = models.scorer().vision
    assert inner is not None
    calls: list[int] = []

    class Counting:
        def score_windows(self, windows):  # type: ignore[no-untyped-def]
            calls.append(len(windows))
            return inner.score_windows(windows)

    cached = CachedVision(inner=Counting())
    windows = sample_windows()[:8]
    first = cached.score_windows(windows[:5])
    again = cached.score_windows(windows)
    direct = inner.score_windows(windows)
    assert calls == [5, 3]
    np.testing.assert_allclose(again.p_up, direct.p_up, rtol=1e-5)  # float32 batch sizes differ
    np.testing.assert_allclose(again.embeddings[:5], first.embeddings)


def test_log_drift_when_live_rows_differ_from_training_then_drift_detected_logged() -> None:
    touchy = FusionConfig(
        method="weighted",
        drift=DriftConfig(psi_threshold=0.05, window=50, min_samples=20),
    )
    scorer, _ = _load(quick_bundle(), bars=BARS, fusion=touchy)
    windows = sample_windows(200, seed=99, symbols=("X", "Y", "Z"))
    with capture_logs() as logs:
        found = sum(
            (scorer.score(windows[i : i + 30]), log_drift(scorer))[1]
            for i in range(0, len(windows), 30)
        )
    events = [e for e in logs if e["event"] == "model.drift_detected"]
    assert found >= 1
    assert len(events) == found
    assert events[0]["max_psi"] > 0.05
    assert events[0]["recommendation"] == "retrain"
    assert events[0]["drifted"]


@pytest.fixture(scope="module")
def bars_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bars") / "bars.csv"
    market = SimMarketConfig(symbols=("A", "B"), pattern_rate=0.05, seed=21)
    frame = simulate_frame(market, datetime(2024, 5, 1, tzinfo=UTC), 700)
    frame.drop(columns=["pattern", "direction"]).to_csv(path, index=False)
    return path


def test_backtest_cli_when_full_bundle_then_clip_xgb_technical_fused_rules_and_buy_and_hold(
    bars_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text(
        f"bars:\n  window: {WINDOW}\nstrategy:\n  enter_threshold: 0.52\nscorer:\n  runtime: onnx\n"
    )
    report = tmp_path / "report"
    argv = ["backtest", "--config", str(config), "--bars", str(bars_csv), "--report", str(report)]
    bundle = quick_bundle()  # built (and its engine chosen) outside the logs when it runs first
    with capture_logs() as logs:
        assert cli_backtest.main([*argv, "--bundle", str(bundle), "--no-progress"]) == 0
    doc = json.loads((report / "report.json").read_text())
    assert set(doc["comparison"]) == {"rules", "clip", "xgb_technical", "fused", "buy_and_hold"}
    out = capsys.readouterr()
    assert "fused" in out.out
    # scorer.runtime of the config served the contenders' CLIP: the ONNX export ran
    assert doc["meta"]["clip_runtime"] == "onnx"
    assert doc["meta"]["clip_runtime_requested"] == "onnx"
    assert "CLIP runtime: onnx" in out.err
    chosen = [e for e in logs if e["event"] == "engine.runtime_chosen"]
    assert [(e["requested"], e["chosen"]) for e in chosen] == [("onnx", "onnx")]


def test_evaluate_cli_when_full_bundle_then_clip_both_xgbs_and_fused_metrics(
    bars_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text(f"bars:\n  window: {WINDOW}\n")
    report = tmp_path / "ev"
    argv = ["evaluate", "--bars", str(bars_csv), "--bundle", str(quick_bundle())]
    argv += ["--config", str(config), "--report", str(report), "--no-progress"]
    with capture_logs() as logs:
        assert cli_backtest.main([*argv, "--runtime", "onnx"]) == 0  # the flag over the config
    chosen = [e for e in logs if e["event"] == "engine.runtime_chosen"]
    assert [(e["requested"], e["chosen"]) for e in chosen] == [("onnx", "onnx")]
    doc = json.loads((report / "report.json").read_text())
    assert doc["meta"]["clip_runtime"] == "onnx"
    assert doc["meta"]["clip_runtime_requested"] == "onnx"  # the flag, recorded beside the choice
    assert {"clip", "xgb", "xgb_technical", "fused"} <= set(doc["model_metrics"])
    metrics = doc["model_metrics"]
    assert metrics["xgb"]["auc"] != metrics["xgb_technical"]["auc"]  # two models, not one twice
    expected = {"rules", "clip", "xgb", "xgb_technical", "fused", "buy_and_hold"}
    assert expected <= set(doc["comparison"])
    out = capsys.readouterr()
    assert "clip" in out.out
    assert "CLIP runtime: onnx" in out.err


def test_backtest_cli_when_window_too_short_for_bundle_then_one_line_error(
    bars_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text("bars:\n  window: 20\n")
    argv = ["backtest", "--config", str(config), "--bars", str(bars_csv)]
    argv += ["--report", str(tmp_path / "r"), "--bundle", str(quick_bundle()), "--no-progress"]
    assert cli_backtest.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "needs windows of 32 bars" in err
    assert len(err.splitlines()) == 1


def test_add_to_bundle_when_files_added_then_card_rehashed_and_escaping_path_refused(
    tmp_path: Path,
) -> None:
    bundle = bundle_copy(tmp_path)
    before = read_card(bundle)
    card = add_to_bundle(
        bundle, files={"extra/note.json": b"{}"}, metrics={"note": 1.0}, stages={"note": {"a": 1}}
    )
    assert "extra/note.json" in card.files
    assert card.bundle_id != before.bundle_id
    assert card.metrics["note"] == 1.0
    assert card.stages["note"] == {"a": 1}
    assert "tabular" in card.stages
    assert verify_bundle(bundle).bundle_id == card.bundle_id
    with pytest.raises(BundleError, match="cannot add"):
        add_to_bundle(bundle, files={"../outside.json": b"{}"})
    assert not (tmp_path / "outside.json").exists()
