"""A bundle's models as the contenders of `vlmtrader backtest` and `evaluate`: CLIP-only, XGBoost-only
and fused scorers over one loaded bundle sharing each window's CLIP scores, and what the report
says about the bundle."""

from __future__ import annotations

from pathlib import Path

import msgspec
import structlog

from daemon.model.active import LoadOptions, inference_config
from daemon.model.loader import XGB_DIR, LoadedBundle, check_windows, load_bundle, read_fusion
from daemon.model.vision import CachedVision, ClipVision
from strategy.backtest.evaluate import BundleInfo, TrainedSpan
from strategy.bars import BarStoreConfig
from strategy.features import FeatureConfig
from strategy.fusion import FusionConfig
from strategy.ml_scorer import VisionModel
from strategy.scoring import Scorer
from vlm_engine.xgb.model import XgbModel
from vlm_engine.xgb.pca import PcaParams

log = structlog.get_logger("daemon.model")


class BacktestBundle(msgspec.Struct, frozen=True, kw_only=True):
    """What a backtest report says about the bundle it scored with."""

    path: str
    bundle_id: str
    fusion: str
    horizon_bars: int
    bar_seconds: int
    runtime: str = ""  # what ran CLIP's image tower (torch, onnx, onnx-int8); "" without CLIP


def _reads_clip(model: XgbModel) -> bool:
    return any(n.startswith("clip_") for n in model.feature_names)


def _contenders(
    bundle: Path,
    bars: BarStoreConfig,
    options: LoadOptions,
    command: str,
    vision: VisionModel | None = None,
) -> tuple[LoadedBundle, CachedVision]:
    """The bundle loaded with CLIP on the runtime options ask for, and its CLIP cached per window
    (vision, when given, answers for the bundle's CLIP: scores computed elsewhere, e.g. on a Ray
    cluster, daemon/cluster/clip_scores.py)."""
    models = load_bundle(bundle, inference=inference_config(options))
    check_windows(models, bars)
    log.info(
        "contenders.loaded",
        command=command,
        bundle_id=models.bundle_id,
        runtime=models.engine.runtime,
        requested=options.runtime,
    )
    return models, CachedVision(inner=vision or ClipVision(engine=models.engine))


def bundle_scorers(
    bundle: Path,
    bars: BarStoreConfig,
    options: LoadOptions | None = None,
    *,
    vision: VisionModel | None = None,
) -> tuple[dict[str, Scorer], BacktestBundle]:
    """CLIP-only, XGBoost-only and fused scorers over one loaded bundle, sharing each window's CLIP
    scores, and what the bundle is. XGBoost-only is "xgb_technical" (technical features alone)
    when the bundle has that model, else "xgb" (older bundles: the XGBoost that also sees the CLIP
    columns). options: where and on which runtime CLIP runs; vision, when given, answers for the
    bundle's CLIP (scores computed elsewhere, e.g. on a Ray cluster)."""
    scorers, info, _ = bundle_contenders(bundle, bars, options, vision=vision)
    return scorers, info


def bundle_contenders(
    bundle: Path,
    bars: BarStoreConfig,
    options: LoadOptions | None = None,
    *,
    vision: VisionModel | None = None,
) -> tuple[dict[str, Scorer], BacktestBundle, LoadedBundle]:
    """bundle_scorers, and the loaded bundle behind them (the backtest explains its trades with it)."""
    models, cached = _contenders(bundle, bars, options or LoadOptions(), "backtest", vision)
    xgb_name = "xgb_technical" if models.xgb_technical is not None else "xgb"
    trained = models.card.trained_on
    info = BacktestBundle(
        path=str(bundle),
        bundle_id=models.bundle_id,
        fusion=models.fusion.describe(xgb_reads_clip=_reads_clip(models.xgb)),
        horizon_bars=trained.horizon_bars if trained else models.xgb.meta.horizon_bars,
        bar_seconds=trained.bar_seconds if trained else models.xgb.meta.bar_seconds,
        runtime=models.engine.runtime,
    )
    scorers: dict[str, Scorer] = {
        "clip": models.scorer(mode="clip", vision=cached, name="clip"),
        xgb_name: models.scorer(mode="xgb", vision=cached, name=xgb_name),
        "fused": models.scorer(mode="fused", vision=cached, name="fused"),
    }
    return scorers, info, models


def xgb_info(bundle: Path) -> BacktestBundle:
    """What an xgb/-only directory is (no model card: its id is the directory name)."""
    model = XgbModel.load(bundle / XGB_DIR)
    return BacktestBundle(
        path=str(bundle),
        bundle_id=f"{bundle.name} (xgb/ only, no model card)",
        fusion=read_fusion(bundle).describe(xgb_reads_clip=_reads_clip(model)),
        horizon_bars=model.meta.horizon_bars,
        bar_seconds=model.meta.bar_seconds,
    )


def evaluation_models(
    bundle: Path, bars: BarStoreConfig, options: LoadOptions | None = None
) -> tuple[VisionModel, PcaParams | None, FeatureConfig, FusionConfig, BundleInfo, str]:
    """The bundle's warm CLIP (cached per window), PCA, feature and fusion configs for evaluate(),
    what it was trained on and the runtime CLIP runs on (options say which to ask for). Its bar
    size is not checked: evaluate says what it does instead."""
    models, vision = _contenders(bundle, bars, options or LoadOptions(), "evaluate")
    on = models.card.trained_on
    info = BundleInfo(
        bar_seconds=on.bar_seconds if on is not None else models.xgb.meta.bar_seconds,
        trained_on=TrainedSpan(symbols=on.symbols, end=on.end) if on is not None else None,
    )
    return vision, models.pca, models.features, models.fusion, info, models.engine.runtime
