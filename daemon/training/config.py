"""The build's typed configuration: one pipeline (`BuildConfig`), fed by user bars or the simulator (`BootstrapConfig`)."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import msgspec

from strategy.features import FeatureConfig
from strategy.market_sim import SimMarketConfig
from strategy.sim_patterns import ALL_PATTERNS, CHART_SHAPES
from vlm_engine.clip import ClipModelConfig
from vlm_engine.clip.quickset import QuicksetConfig
from vlm_engine.clip.train import TrainConfig
from vlm_engine.labels.patterns import PATTERN_NAMES
from vlm_engine.render import ChartSpec
from vlm_engine.xgb import XgbTrainConfig

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
Fraction = Annotated[float, msgspec.Meta(gt=0, lt=1)]

# The default model input: the last 20 bars as plain candles at 128 px (6 px per candle), because the
# compact CLIP learns the planted patterns from this within the CPU budget; with 40 bars, overlays
# and volume (3 px per candle) it stayed at chance in the same budget.
DEFAULT_SPEC = ChartSpec(window=20, width=128, height=128, volume=False, bollinger=False, sma=())

# The detector labels of user bars, in priority order: when several fire on one bar, the first
# listed wins (three-bar formations before two-bar ones before single candles: the longer
# formation is the rarer, more specific statement about the chart's end).
DEFAULT_LABEL_PATTERNS: tuple[str, ...] = (
    "three_white_soldiers",
    "three_black_crows",
    "morning_star",
    "evening_star",
    "bullish_engulfing",
    "bearish_engulfing",
    "hammer",
    "shooting_star",
)


def default_horizon(bar_seconds: int) -> int:
    """Label horizon in bars: 5 bars from one-minute bars up (a week of daily bars), about 5 minutes below."""
    if bar_seconds >= 60:
        return 5
    return max(5, math.ceil(300 / bar_seconds))


class LabelConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which TA-Lib detectors label user bars (on each chart's last bar), in priority order."""

    patterns: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)] = DEFAULT_LABEL_PATTERNS

    def __post_init__(self) -> None:
        unknown = sorted(set(self.patterns) - set(PATTERN_NAMES))
        if unknown:
            msg = f"labels.patterns: unknown pattern(s) {', '.join(unknown)} (known: {', '.join(PATTERN_NAMES)})"
            raise ValueError(msg)


class SplitConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Global time cuts over the whole period (all symbols): CLIP part, tabular part, held-out last part.

    clip_fraction: the first part of the timestamps (CLIP train/validation/test charts);
    holdout_fraction: the last part, only scored for the card (nothing is fitted on it);
    embargo_bars: bars between the tabular rows' label ends and the held-out part.
    """

    clip_fraction: Fraction = 0.5
    holdout_fraction: Fraction = 0.15
    embargo_bars: Annotated[int, msgspec.Meta(ge=0)] = 5

    def __post_init__(self) -> None:
        if self.clip_fraction + self.holdout_fraction >= 0.95:
            msg = "split: clip_fraction + holdout_fraction must leave at least 5% for the tabular stage"
            raise ValueError(msg)


class TabularConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The XGBoost + fusion stage on every live window of the tabular part.

    window is the BarStore window the rows are cut with (the daemon's bars.window must be at
    least this).
    """

    window: Annotated[int, msgspec.Meta(ge=8)] = 64
    pca_components: Annotated[int, msgspec.Meta(ge=0)] = 4
    features: FeatureConfig = msgspec.field(default_factory=FeatureConfig)
    xgb: XgbTrainConfig = msgspec.field(
        default_factory=lambda: XgbTrainConfig(
            n_folds=4, num_boost_round=300, early_stopping_rounds=30, learning_rate=0.05
        )
    )
    # select: stacking or a weight in 0, 0.1, ..., 1 on (clip, xgb), whichever has the lowest log
    # loss on the later out-of-fold rows when fitted on the earlier ones (weight 0 on clip is the
    # XGBoost that sees the CLIP columns, alone).
    fusion: Literal["select", "stacking", "weighted"] = "select"
    weights: dict[str, Annotated[float, msgspec.Meta(ge=0)]] = msgspec.field(
        default_factory=lambda: {"clip": 0.5, "xgb": 0.5}
    )
    disagreement_penalty: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5

    def __post_init__(self) -> None:
        if self.features.lookback > self.window:
            msg = f"tabular.features.lookback ({self.features.lookback}) must not exceed tabular.window ({self.window})"
            raise ValueError(msg)


class AnalogConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The analog index stored in the bundle: CLIP embeddings + PNGs of training charts.

    max_rows caps the rows (drawn by `seed` when the training split has more; 0 = no index).
    """

    max_rows: Annotated[int, msgspec.Meta(ge=0)] = 5_000
    seed: Annotated[int, msgspec.Meta(ge=0)] = 0
    compress_level: Annotated[int, msgspec.Meta(ge=0, le=9)] = 9


def _default_train() -> TrainConfig:
    return TrainConfig(
        epochs=14,
        learning_rate=1e-3,
        warmup_steps=30,
        patience=3,
        min_epochs=4,
        progress=False,
        threads=1,
    )


def _square(pixels: int) -> ChartSpec:
    """DEFAULT_SPEC's 20 candles drawn at pixels x pixels."""
    return msgspec.structs.replace(DEFAULT_SPEC, width=pixels, height=pixels)


def _train_at(pixels: int) -> TrainConfig:
    """The default training with an image tower of that input size (patch 16)."""
    return msgspec.structs.replace(_default_train(), model=ClipModelConfig(image_size=pixels))


# The default bundle's chart and image tower: the same 20 candles drawn at 80 px (4 px a candle),
# the model's input size (25 patches of 16 px, no resize in the ONNX graph); 96 px and 36 patches
# until 2026-12-03, 128 px and 64 patches until 2026-12-02.
# 80 vs 96 px (issue 16: the tower was the largest stage of the ML order path at 100 symbols),
# bench/bench_tower.py --ref chart96, same run, load 7.5: render + static INT8 tower 0.100 vs 0.144
# CPU ms per chart (1.44x; fp32 1.49x); build 89-91 vs 110 CPU s. On the same rows, paired 95%
# intervals, 80 vs 96 px with the same training seed (seeds 0 | 1): pattern accuracy on 720 test
# charts 0.985 vs 0.979, +0.006 [-0.007, +0.015] | 0.989 vs 0.986, +0.003 [-0.007, +0.010];
# direction AUC 0.812 vs 0.819, -0.007 [-0.023, +0.022] | 0.808 vs 0.817, -0.009 [-0.034, +0.015]
# (lower on both seeds, within the intervals); `vlmtrader evaluate --runtime onnx-int8`'s fused AUC
# on the held-out bars 0.530 vs 0.535, -0.006 [-0.021, +0.005] | 0.541 vs 0.538, +0.004 [-0.010,
# +0.009]. Two seeds of the 96 px tower differ by +0.002 fused and -0.012 [-0.021, -0.003] in CLIP
# alone there. Not taken: 64 px (16 patches, 2.1x) lost direction AUC on both seeds (-0.014, -0.015)
# and fused AUC on seed 1, -0.013 [-0.026, -0.009]; 80 px at width 48 (1.6x) built for seed 0 only.
# 96 vs 128 px (2026-12-02): render + tower 1.9-2.0x cheaper per chart at the same paired figures;
# 128 px resized to 96 inside the graph saved nothing and lost 0.025 accuracy; patch 32 (1.6x)
# 0.033; one layer (1.5x) 0.019 and 0.022 direction AUC. User bars (BuildConfig) keep 128 px: not
# measured on them.
BOOTSTRAP_PIXELS = 80
BOOTSTRAP_SPEC = _square(BOOTSTRAP_PIXELS)


def _bootstrap_train() -> TrainConfig:
    return _train_at(BOOTSTRAP_PIXELS)


class BuildConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Bars -> labelled charts -> CLIP fine-tune + calibration -> XGBoost + fusion -> held-out card figures.

    horizon: label horizon in bars for CLIP's direction and the tabular rows (0 = default_horizon
    of the bars' size). samples.horizon is replaced by it.
    """

    spec: ChartSpec = DEFAULT_SPEC
    labels: LabelConfig = msgspec.field(default_factory=LabelConfig)
    samples: QuicksetConfig = msgspec.field(
        default_factory=lambda: QuicksetConfig(max_per_class=200)
    )
    train: TrainConfig = msgspec.field(default_factory=_default_train)
    split: SplitConfig = msgspec.field(default_factory=SplitConfig)
    horizon: Annotated[int, msgspec.Meta(ge=0)] = 0
    # CLIP optimizer steps to aim for (0 = train.epochs as given): epochs = steps / batches per
    # epoch, within [train.min_epochs, max_epochs]. A few hundred daily charts make 13 batches an
    # epoch: 14 epochs were 180 steps and the model had not left chance; the simulator's charts
    # reach 0.9 accuracy after ~300 steps.
    train_steps: Annotated[int, msgspec.Meta(ge=0)] = 800
    max_epochs: PositiveInt = 60
    # One torch thread: on a shared 2-core machine OpenMP spin-waiting made 2 threads 5x slower.
    threads: Annotated[int, msgspec.Meta(ge=0)] = 1
    tabular: TabularConfig = msgspec.field(default_factory=TabularConfig)
    analogs: AnalogConfig = msgspec.field(default_factory=AnalogConfig)


class BootstrapConfig(BuildConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The build fed by the simulated market: `bars` timestamps of `market`, planted patterns as labels."""

    # The candlestick patterns and the chart shapes (double bottom / top) that no candlestick
    # function names: the model has an edge to find that the technical features do not flag.
    market: SimMarketConfig = msgspec.field(
        default_factory=lambda: SimMarketConfig(
            symbols=tuple(f"SIM{c}" for c in "ABCDEFGH"),
            pattern_rate=0.05,
            seed=11,
            patterns=ALL_PATTERNS + CHART_SHAPES,
        )
    )
    bars: PositiveInt = 30_000
    spec: ChartSpec = BOOTSTRAP_SPEC
    train: TrainConfig = msgspec.field(default_factory=_bootstrap_train)
    train_steps: Annotated[int, msgspec.Meta(ge=0)] = 0  # train.epochs as given
    # 20,000 bars for CLIP, 10,000 later bars for the tabular stage, its last 30% held out.
    split: SplitConfig = msgspec.field(
        default_factory=lambda: SplitConfig(clip_fraction=2 / 3, holdout_fraction=0.1)
    )
    samples: QuicksetConfig = msgspec.field(default_factory=QuicksetConfig)


def previous_bootstrap_config() -> BootstrapConfig:
    """The bootstrap default until 2026-12-02 (128 px charts, 64 patches): `model export-onnx`
    rebuilds the test split of a default bundle built with it."""
    return BootstrapConfig(spec=DEFAULT_SPEC, train=_default_train())


def bootstrap_config_96() -> BootstrapConfig:
    """The bootstrap default from 2026-12-02 to 2026-12-03 (96 px charts, 36 patches): what the
    default bundles of that time (e.g. boot8) were built with."""
    return BootstrapConfig(spec=_square(96), train=_train_at(96))


def previous_bootstrap_configs() -> list[BootstrapConfig]:
    """The earlier bootstrap defaults, newest first (`model export-onnx` tries each)."""
    return [bootstrap_config_96(), previous_bootstrap_config()]


def _tiny_train() -> TrainConfig:
    return TrainConfig(
        model=ClipModelConfig(
            image_size=32,
            patch_size=16,
            vision_layers=1,
            vision_width=32,
            vision_heads=2,
            text_layers=1,
            text_width=32,
            text_heads=2,
            projection_dim=32,
            max_text_tokens=16,
            vocab_size=120,
        ),
        epochs=1,
        batch_size=32,
        warmup_steps=2,
        progress=False,
    )


_TINY_SPEC = ChartSpec(window=32, width=64, height=64, sma=(), bollinger=False)


def _tiny_tabular() -> TabularConfig:
    return TabularConfig(
        window=32,
        pca_components=2,
        features=FeatureConfig(lookback=32),
        xgb=XgbTrainConfig(
            n_folds=2, num_boost_round=30, early_stopping_rounds=5, learning_rate=0.2
        ),
    )


def quick_config() -> BootstrapConfig:
    """A tiny bootstrap that builds a (weak) bundle in seconds: for tests and smoke runs."""
    return BootstrapConfig(
        market=SimMarketConfig(symbols=("SIMA", "SIMB"), pattern_rate=0.08, seed=11),
        bars=2_500,
        split=SplitConfig(clip_fraction=0.64, holdout_fraction=0.12),
        spec=_TINY_SPEC,
        train=_tiny_train(),
        threads=1,
        tabular=_tiny_tabular(),
    )


def quick_build_config() -> BuildConfig:
    """The same tiny model for user bars (`model build --quick`)."""
    return BuildConfig(
        spec=_TINY_SPEC,
        train_steps=0,
        samples=QuicksetConfig(max_per_class=300),
        train=_tiny_train(),
        threads=1,
        tabular=_tiny_tabular(),
    )
