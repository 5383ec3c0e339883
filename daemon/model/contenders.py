"""A bundle's models as the contenders of `vlmtrader backtest` and `evaluate`: CLIP-only, XGBoost-only
and fused scorers over one loaded bundle sharing each window's CLIP scores, and what the report
says about the bundle."""

from __future__ import annotations

from pathlib import Path

import msgspec

from daemon.model.loader import XGB_DIR, check_windows, load_bundle, read_fusion
from daemon.model.vision import CachedVision, ClipVision
from strategy.backtest.evaluate import BundleInfo, TrainedSpan
from strategy.bars import BarStoreConfig
from strategy.features import FeatureConfig
from strategy.fusion import FusionConfig
from strategy.ml_scorer import VisionModel
from strategy.scoring import Scorer
from vlm_engine.xgb.model import XgbModel
from vlm_engine.xgb.pca import PcaParams


class BacktestBundle(msgspec.Struct, frozen=True, kw_only=True):
    """What a backtest report says about the bundle it scored with."""

    path: str
    bundle_id: str
    fusion: str
    horizon_bars: int
    bar_seconds: int


def _reads_clip(model: XgbModel) -> bool:
    return any(n.startswith("clip_") for n in model.feature_names)


def bundle_scorers(
    bundle: Path, bars: BarStoreConfig, *, vision: VisionModel | None = None
) -> tuple[dict[str, Scorer], BacktestBundle]:
    """CLIP-only, XGBoost-only and fused scorers over one loaded bundle, sharing each window's CLIP
    scores, and what the bundle is. XGBoost-only is "xgb_technical" (technical features alone)
    when the bundle has that model, else "xgb" (older bundles: the XGBoost that also sees the CLIP
    columns). vision, when given, answers for the bundle's CLIP (scores computed elsewhere, e.g.
    on a Ray cluster: daemon/cluster/clip_scores.py)."""
    models = load_bundle(bundle)
    check_windows(models, bars)
    vision = CachedVision(inner=vision or ClipVision(engine=models.engine))
    xgb_name = "xgb_technical" if models.xgb_technical is not None else "xgb"
    trained = models.card.trained_on
    info = BacktestBundle(
        path=str(bundle),
        bundle_id=models.bundle_id,
        fusion=models.fusion.describe(xgb_reads_clip=_reads_clip(models.xgb)),
        horizon_bars=trained.horizon_bars if trained else models.xgb.meta.horizon_bars,
        bar_seconds=trained.bar_seconds if trained else models.xgb.meta.bar_seconds,
    )
    scorers: dict[str, Scorer] = {
        "clip": models.scorer(mode="clip", vision=vision, name="clip"),
        xgb_name: models.scorer(mode="xgb", vision=vision, name=xgb_name),
        "fused": models.scorer(mode="fused", vision=vision, name="fused"),
    }
    return scorers, info


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
    bundle: Path, bars: BarStoreConfig
) -> tuple[VisionModel, PcaParams | None, FeatureConfig, FusionConfig, BundleInfo]:
    """The bundle's warm CLIP (cached per window), PCA, feature and fusion configs for evaluate(),
    and what it was trained on. Its bar size is not checked: evaluate says what it does instead."""
    models = load_bundle(bundle)
    check_windows(models, bars)
    vision = CachedVision(inner=ClipVision(engine=models.engine))
    on = models.card.trained_on
    info = BundleInfo(
        bar_seconds=on.bar_seconds if on is not None else models.xgb.meta.bar_seconds,
        trained_on=TrainedSpan(symbols=on.symbols, end=on.end) if on is not None else None,
    )
    return vision, models.pca, models.features, models.fusion, info
