"""`vlmtrader model build`: user bars -> detector labels -> time-split build -> a bundle every command accepts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest
from structlog.testing import capture_logs

from daemon.cli import backtest as cli_backtest
from daemon.cli import main
from daemon.training import (
    BuildInputError,
    LabelConfig,
    SplitConfig,
    TabularConfig,
    build,
    combine,
    detector_labels,
    fit_fusion,
    quick_build_config,
    select_fusion,
    sim_bars,
    time_split,
)
from daemon.training.config import BootstrapConfig
from daemon.training.sources import business_days
from strategy.market_sim import SimMarketConfig, simulate_frame
from vlm_engine.bundle import read_card
from vlm_engine.metrics import summary

START = datetime(2024, 1, 1, tzinfo=UTC)


def write_bars(path: Path, *, bar_seconds: int, bars: int, seed: int = 5) -> Path:
    """Simulated bars with no planted pattern (what a user's file looks like), daily ones on business days."""
    market = SimMarketConfig(
        symbols=("AAA", "BBB"), bar_seconds=bar_seconds, pattern_rate=0.0, seed=seed
    )
    frame = simulate_frame(market, START, bars).drop(columns=["pattern", "direction"])
    if bar_seconds == 86_400:
        frame["ts"] = business_days(frame["ts"])
    frame.to_parquet(path, index=False)
    return path


@pytest.fixture(scope="module", params=[60, 86_400], ids=["1min", "1day"])
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, int]:
    bar_seconds: int = request.param
    root = tmp_path_factory.mktemp(f"build{bar_seconds}")
    bars = write_bars(root / "bars.parquet", bar_seconds=bar_seconds, bars=1_400)
    out = root / "bundle"
    assert main(["model", "build", "--bars", str(bars), "--out", str(out), "--quick"]) == 0
    return bars, out, bar_seconds


def test_build_when_user_bars_then_card_records_bar_size_horizon_and_split(
    built: tuple[Path, Path, int],
):
    bars, out, bar_seconds = built
    card = read_card(out)
    assert card.trained_on is not None
    assert card.trained_on.bar_seconds == bar_seconds
    assert card.trained_on.horizon_bars == 5
    assert card.trained_on.symbols == ("AAA", "BBB")
    assert card.trained_on.start < card.trained_on.end < card.trained_on.holdout_start
    assert {f"{m}_holdout_auc" for m in ("clip", "xgb", "xgb_technical", "fused")} <= set(
        card.metrics
    )
    assert card.dataset.source == f"bars:{bars}"
    assert not out.with_name(f".{out.name}.building").exists()
    assert out.with_name(f"{out.name}.build.log").is_file()


def test_model_info_when_built_then_prints_bar_size_horizon_period_and_fusion_in_words(
    built: tuple[Path, Path, int], capsys: pytest.CaptureFixture[str]
):
    _, out, bar_seconds = built
    assert main(["model", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"bar size:    {bar_seconds} s" in text
    assert "horizon:     5 bars" in text
    assert "held out:" in text
    assert "fusion:      fused = " in text


def _daemon_config(path: Path, bars: Path, bar_seconds: int, extra: str = "") -> Path:
    path.write_text(
        f"bars:\n  window: 40\n  bar_seconds: {bar_seconds}\n  gap_policy: accept\n"
        f"feed:\n  kind: replay\n  replay:\n    path: {bars}\n    max_bars: 80\n"
        f"strategy:\n  bar_seconds: {bar_seconds}\n  enter_threshold: 0.51\n  min_confidence: 0.0\n{extra}"
    )
    return path


def test_evaluate_and_backtest_when_built_bundle_then_accept_it(
    built: tuple[Path, Path, int], tmp_path: Path
):
    bars, out, bar_seconds = built
    config = _daemon_config(tmp_path / "cfg.yaml", bars, bar_seconds)
    common = ["--bars", str(bars), "--bundle", str(out), "--no-progress", "--config", str(config)]
    assert cli_backtest.main(["evaluate", *common, "--report", str(tmp_path / "ev")]) == 0
    assert (tmp_path / "ev" / "report.json").is_file()
    assert cli_backtest.main(["backtest", *common, "--report", str(tmp_path / "bt")]) == 0
    doc = json.loads((tmp_path / "bt" / "report.json").read_text())
    assert "fused" in doc["comparison"]


def test_serve_when_built_bundle_then_loads_with_the_bundles_bar_size(
    built: tuple[Path, Path, int],
):
    from daemon.model.active import LoadOptions, load_active
    from strategy.backtest.data import frame_batches, iter_windows
    from strategy.bars import BarStoreConfig

    bars, out, bar_seconds = built
    model = load_active(out, LoadOptions(device="cpu", threads=1))
    assert model.bar_seconds == bar_seconds
    store = BarStoreConfig(window=40, bar_seconds=bar_seconds, gap_policy="accept")
    windows = next(iter(iter_windows(frame_batches(pd.read_parquet(bars).head(200)), store)))
    signals = model.scorer.score(windows[:4])
    assert len(signals) == 4
    assert all(0.0 <= s.p_up <= 1.0 for s in signals)


def test_run_when_paper_sim_replays_the_file_with_the_built_bundle_then_trades_with_ml(
    built: tuple[Path, Path, int], tmp_path: Path
):
    bars, out, bar_seconds = built
    config = _daemon_config(
        tmp_path / "run.yaml",
        bars,
        bar_seconds,
        f"mode: paper-sim\nstate_dir: {tmp_path / 'state'}\n"
        f"scorer:\n  kind: ml\n  bundle: {out}\n"
        "api:\n  enabled: false\nlog:\n  format: json\n",
    )
    # In a process of its own: the daemon configures logging for its whole process.
    done = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"scorer.loaded"' in done.stdout
    assert (tmp_path / "state" / "journal.sqlite").is_file()


def test_build_when_interrupted_after_clip_then_rerun_skips_the_finished_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import daemon.training.pipeline as pipeline

    bars = write_bars(tmp_path / "bars.parquet", bar_seconds=60, bars=1_400, seed=8)
    frame = detector_labels(pd.read_parquet(bars), LabelConfig())
    cfg, out = quick_build_config(), tmp_path / "bundle"
    real = pipeline.fit_tabular

    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "fit_tabular", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(frame, cfg, out, source="test")
    assert (tmp_path / ".bundle.building" / "bundle" / "model_card.json").is_file()
    monkeypatch.setattr(pipeline, "fit_tabular", real)
    result = build(frame, cfg, out, source="test")
    assert result.resumed == ("clip",)
    assert result.stage_seconds["clip"] == 0.0
    assert "fusion.json" in read_card(out).files


def test_build_when_config_changes_then_finished_stages_are_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import daemon.training.pipeline as pipeline

    bars = write_bars(tmp_path / "bars.parquet", bar_seconds=60, bars=1_400, seed=8)
    frame = detector_labels(pd.read_parquet(bars), LabelConfig())
    cfg = quick_build_config()

    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "fit_tabular", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(frame, cfg, tmp_path / "bundle", source="test")
    monkeypatch.undo()
    other = msgspec.structs.replace(cfg, horizon=4)
    assert build(frame, other, tmp_path / "bundle", source="test").resumed == ()


def test_build_when_too_few_bars_then_exit_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    bars = write_bars(tmp_path / "bars.parquet", bar_seconds=60, bars=120)
    assert (
        main(["model", "build", "--bars", str(bars), "--out", str(tmp_path / "b"), "--quick"]) == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: bars: 120 distinct bar times, this build needs at least")


def test_build_when_bad_file_then_exit_1_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    bad = tmp_path / "bars.csv"
    bad.write_text("symbol,ts,open\nA,2024-01-01,1\n")
    assert (
        main(["model", "build", "--bars", str(bad), "--out", str(tmp_path / "b"), "--quick"]) == 1
    )
    assert f"error: {bad}: missing column(s) high, low, close, volume" in capsys.readouterr().err


def _build_args(tmp_path: Path, *extra: str) -> list[str]:
    """`model build` of tmp_path into tmp_path/b with extra flags (for argument errors)."""
    return ["model", "build", "--bars", str(tmp_path), "--out", str(tmp_path / "b"), *extra]


def test_build_when_config_field_unknown_then_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    cfg = tmp_path / "build.yaml"
    cfg.write_text("tabular:\n  bogus: 1\n")
    args = _build_args(tmp_path, "--config", str(cfg))
    assert main(args) == 2
    assert "bogus" in capsys.readouterr().err


def test_detector_labels_when_several_fire_then_the_first_configured_wins():
    frame = pd.DataFrame(
        {
            "symbol": ["A"] * 3,
            "ts": pd.date_range(START, periods=3, freq="min"),
            # a down candle, then a big up candle engulfing it
            "open": [10.0, 10.5, 9.6],
            "high": [10.6, 10.6, 11.2],
            "low": [9.9, 9.7, 9.5],
            "close": [10.5, 9.8, 11.0],
            "volume": [1.0, 1.0, 1.0],
        }
    )
    engulfing = detector_labels(frame, LabelConfig(patterns=("bullish_engulfing", "hammer")))
    assert engulfing["pattern"].tolist() == ["", "", "bullish_engulfing"]
    assert detector_labels(frame, LabelConfig(patterns=("bearish_engulfing",)))[
        "pattern"
    ].tolist() == ["", "", ""]


def test_label_config_when_unknown_pattern_then_error_names_it():
    with pytest.raises(ValueError, match="unknown pattern"):
        LabelConfig(patterns=("hammer", "flying_pig"))


def test_time_split_when_fractions_given_then_cuts_are_global_and_ordered():
    stamps = np.arange(1_000, dtype=np.int64) * 60
    cfg = msgspec.structs.replace(
        quick_build_config(), split=SplitConfig(clip_fraction=0.5, holdout_fraction=0.2)
    )
    cut = time_split(stamps, cfg)
    assert cut.clip_end == stamps[499]
    assert cut.holdout_start == stamps[800]


def test_sim_bars_when_daily_then_business_days_only():
    cfg = BootstrapConfig(market=SimMarketConfig(symbols=("A",), bar_seconds=86_400), bars=30)
    frame, source = sim_bars(cfg)
    assert (pd.DatetimeIndex(frame["ts"]).day_of_week < 5).all()
    assert source.startswith("sim:")


def _rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels with a small edge, an informative calibrated model and timestamps in order."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    y = (signal + rng.normal(scale=3.0, size=n) > 0).astype(float)
    informative = 1 / (1 + np.exp(-0.3 * signal))  # calibrated-ish, AUC ~0.6
    return y, informative, np.arange(n, dtype=np.int64) * 60


@pytest.mark.parametrize("informative", ["clip", "xgb"])
def test_select_fusion_when_one_model_is_noise_then_weight_goes_to_the_informative_one(
    informative: str,
):
    y, good, ts = _rows(6000, seed=4)
    noise = np.random.default_rng(9).uniform(0.05, 0.95, y.size)  # confidently wrong half the time
    probs = {"clip": noise, "xgb": good} if informative == "xgb" else {"clip": good, "xgb": noise}
    fusion = select_fusion(TabularConfig(), probs, y, ts, np.ones(y.size, dtype=bool))
    fused = combine(fusion, probs)
    assert summary(y, fused)["log_loss"] < summary(y, noise)["log_loss"]
    if fusion.method == "weighted":
        assert fusion.weights[informative] >= 0.8
    else:
        assert fusion.stacking is not None
        coef = dict(zip(fusion.stacking.models, fusion.stacking.coef, strict=True))
        assert abs(coef[informative]) > 5 * abs(coef["xgb" if informative == "clip" else "clip"])


def test_fit_fusion_when_clip_is_reversed_then_its_recalibration_is_refused_not_flipped():
    y, good, ts = _rows(3000, seed=5)
    with capture_logs() as logs:
        fusion = fit_fusion(TabularConfig(), {"clip": 1 - good, "xgb": good}, y, ts)
    assert fusion.recalibrate["clip"].a == 1.0
    assert fusion.recalibrate["clip"].b == 0.0
    assert any(e["event"] == "calibration.refused" and e["model"] == "clip" for e in logs)


def test_fit_fusion_when_clip_informative_then_recalibration_slope_positive():
    y, good, ts = _rows(3000, seed=6)
    fusion = fit_fusion(TabularConfig(), {"clip": good, "xgb": np.full(y.size, 0.5)}, y, ts)
    assert fusion.recalibrate["clip"].a > 0


def test_build_when_bars_have_no_label_then_refused_with_one_line(tmp_path: Path):
    bars = write_bars(tmp_path / "bars.parquet", bar_seconds=60, bars=1_400)
    frame = pd.read_parquet(bars).assign(pattern="")
    with pytest.raises(BuildInputError, match="no bar carries a pattern label"):
        build(frame, quick_build_config(), tmp_path / "b", source="test")


@pytest.mark.parametrize("name", ["build-daily.yaml", "build-minute.yaml"])
def test_build_config_example_when_decoded_then_valid(name: str):
    from daemon.training import BuildConfig

    path = Path(__file__).resolve().parents[2] / "config" / name
    cfg = msgspec.yaml.decode(path.read_bytes(), type=BuildConfig)
    assert cfg.horizon == 5


@pytest.mark.slow
def test_build_when_detector_labels_on_real_looking_bars_then_clip_recognises_them_on_held_out_charts(
    tmp_path: Path,
):
    from vlm_engine.clip.quickset import QuicksetConfig
    from vlm_engine.render import ChartSpec

    bars = write_bars(tmp_path / "bars.parquet", bar_seconds=60, bars=4_000, seed=5)
    labels = LabelConfig(
        patterns=("bullish_engulfing", "bearish_engulfing", "hammer", "shooting_star")
    )
    quick = quick_build_config()
    model = msgspec.structs.replace(
        quick.train.model, image_size=48, patch_size=8, vision_layers=2, vision_width=64
    )
    cfg = msgspec.structs.replace(
        quick,
        spec=ChartSpec(window=12, width=48, height=48, volume=False, bollinger=False, sma=()),
        labels=labels,
        samples=QuicksetConfig(max_per_class=150),
        train=msgspec.structs.replace(
            quick.train, model=model, learning_rate=1e-3, warmup_steps=20, patience=3, min_epochs=4
        ),
        train_steps=200,
        split=SplitConfig(clip_fraction=0.6, holdout_fraction=0.15),
    )
    frame = detector_labels(pd.read_parquet(bars), labels)
    card = build(frame, cfg, tmp_path / "bundle", source="test").card
    classes = len(card.prompts.classes)  # 4 patterns + none: chance 0.2
    assert classes == 5
    assert card.metrics["pattern_accuracy"] > 0.55
    assert card.metrics["pattern_macro_f1"] > 0.35


def test_build_when_base_is_a_local_hugging_face_clip_then_it_is_fine_tuned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from vlm_engine.clip.model import build_compact_clip, train_tokenizer

    words = [f"a chart ending in a {p.replace('_', ' ')}" for p in LabelConfig().patterns]
    corpus = [
        *words,
        "no candlestick pattern",
        "price rises over the next bars",
        "a downtrend follows",
    ]
    tokenizer = train_tokenizer(corpus, vocab_size=100, max_tokens=16)
    tiny = msgspec.structs.replace(
        quick_build_config().train.model, projection_dim=16, vocab_size=100
    )
    base = tmp_path / "my-clip"
    build_compact_clip(tiny, tokenizer, seed=0).save(base)  # save_pretrained format
    bars = write_bars(tmp_path / "bars.parquet", bar_seconds=60, bars=1_400)
    out = tmp_path / "bundle"
    args = [
        "model",
        "build",
        "--bars",
        str(bars),
        "--out",
        str(out),
        "--quick",
        "--base",
        str(base),
    ]
    assert main(args) == 0
    card = read_card(out)
    assert card.base == str(base)
    assert card.parameters < 200_000
    assert "held-out charts" in capsys.readouterr().out


def test_build_when_base_is_not_a_saved_clip_then_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    args = _build_args(tmp_path, "--base", str(tmp_path))
    assert main(args) == 2
    assert "not a saved Hugging Face CLIP" in capsys.readouterr().err


def test_build_when_quick_and_config_then_quick_settings_win_over_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    # Too few bars: the one-line refusal names the charts and windows of the config in force.
    bars = write_bars(tmp_path / "bars.parquet", bar_seconds=60, bars=120)
    cfg = tmp_path / "build.yaml"
    cfg.write_text("tabular:\n  window: 70\nhorizon: 4\n")
    base = ["model", "build", "--bars", str(bars), "--out", str(tmp_path / "b")]
    assert main([*base, "--config", str(cfg)]) == 1
    from_file = capsys.readouterr().err.strip().splitlines()
    assert main([*base, "--quick"]) == 1
    quick = capsys.readouterr().err.strip().splitlines()
    assert main([*base, "--quick", "--config", str(cfg)]) == 1
    both = capsys.readouterr().err.strip().splitlines()
    assert "windows of 70" in from_file[-1]  # the file alone is read
    assert "windows of 70" not in quick[-1]
    # --quick's tiny model wins over the file, the file's other keys (horizon) still count
    assert both[0] == f"note: --quick replaces tabular from {cfg}"
    sizes = re.compile(r"charts of \d+ bars, windows of \d+")
    assert sizes.findall(both[-1]) == sizes.findall(quick[-1]) != sizes.findall(from_file[-1])
    assert "horizon 4," in both[-1]
