"""`vlmtrader model bootstrap|info|verify`: build the default bundle from the simulated market, inspect or check one.

The bootstrap reads top to bottom: simulated bars with planted patterns -> charts -> CLIP
fine-tune -> calibration (a CLIP-only bundle), then the tabular stage on fresh bars the CLIP
never saw: every live window's TA-Lib features + calibrated CLIP outputs (probabilities and a
PCA of the embedding fitted on these training rows) -> walk-forward XGBoost -> fusion fitted on
the out-of-fold predictions only -> drift reference -> files and metrics added to the bundle.
Beside it, the same XGBoost on the technical features alone: the "XGBoost-only" model the
card, the comparisons and scorer.mode xgb measure the combination against.
The bundle is built in a sibling directory and moved into place only when complete.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt
import structlog
import torch

from daemon.cli_train import print_summary, train_bundle
from daemon.errors import EXIT_OK
from daemon.ml_loader import FUSION_FILE, PCA_FILE, XGB_DIR, XGB_TECHNICAL_DIR
from strategy.backtest.data import build_dataset, frame_batches
from strategy.bars import BarStoreConfig, FloatArray, Window
from strategy.clip_scorer import ClipVision
from strategy.features import FeatureConfig, FeatureEngine
from strategy.fusion import (
    FusionConfig,
    Recalibration,
    drift_reference,
    fit_stacking,
)
from strategy.market_sim import ALL_PATTERNS, CHART_SHAPES, SimMarketConfig, simulate_frame
from strategy.ml_scorer import VisionScores, vision_columns
from vlm_engine.bundle import (
    BundleError,
    DatasetRef,
    ModelCard,
    add_to_bundle,
    read_card,
    verify_bundle,
)
from vlm_engine.clip import ClipError, ClipModelConfig
from vlm_engine.clip.quickset import QuicksetConfig, direction_counts, samples_from_bars
from vlm_engine.clip.train import TrainConfig
from vlm_engine.infer import InferenceConfig, ModelServer
from vlm_engine.render import ChartSpec
from vlm_engine.xgb import XgbError, XgbModel, XgbTrainConfig, fit_pca, logit, sigmoid, train_xgb
from vlm_engine.xgb.metrics import summary
from vlm_engine.xgb.train import TrainResult

log = structlog.get_logger("daemon.cli_model")

EXIT_INPUT = 1
DEFAULT_OUT = Path("state/bundles/default")
SIM_START = datetime(2024, 1, 1, tzinfo=UTC)

# The default model input: the last 20 bars as plain candles at 128 px (6 px per candle), because the
# compact CLIP learns the planted patterns from this within the CPU budget; with 40 bars, overlays
# and volume (3 px per candle) it stayed at chance in the same budget.
DEFAULT_SPEC = ChartSpec(window=20, width=128, height=128, volume=False, bollinger=False, sma=())


PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
Fraction = Annotated[float, msgspec.Meta(gt=0, lt=1)]


class TabularConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The XGBoost + fusion stage: `bars` fresh bars per symbol (market seed + seed_offset), every live window.

    window is the BarStore window the rows are cut with (the daemon's bars.window must be at
    least this); holdout_fraction is the last part (in time) of the out-of-fold rows on which
    the card reports fused vs CLIP-only vs XGBoost-only with the fusion fitted before it.
    """

    bars: PositiveInt = 10_000
    seed_offset: PositiveInt = 1
    window: Annotated[int, msgspec.Meta(ge=8)] = 64
    horizon: PositiveInt = 5
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
    holdout_fraction: Fraction = 0.3

    def __post_init__(self) -> None:
        if self.features.lookback > self.window:
            msg = f"tabular.features.lookback ({self.features.lookback}) must not exceed tabular.window ({self.window})"
            raise ValueError(msg)


class BootstrapConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Simulated bars -> planted-pattern charts -> CLIP training -> calibration -> XGBoost + fusion, all seeded."""

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
    bars: Annotated[int, msgspec.Meta(gt=0)] = 20_000
    spec: ChartSpec = DEFAULT_SPEC
    samples: QuicksetConfig = msgspec.field(default_factory=QuicksetConfig)
    train: TrainConfig = msgspec.field(
        default_factory=lambda: TrainConfig(
            epochs=14,
            learning_rate=1e-3,
            warmup_steps=30,
            patience=3,
            min_epochs=4,
            progress=False,
            threads=1,
        )
    )
    # One torch thread: on a shared 2-core machine OpenMP spin-waiting made 2 threads 5x slower.
    threads: Annotated[int, msgspec.Meta(ge=0)] = 1
    tabular: TabularConfig = msgspec.field(default_factory=TabularConfig)


def quick_config() -> BootstrapConfig:
    """A tiny configuration that builds a (weak) bundle in seconds: for tests and smoke runs."""
    return BootstrapConfig(
        market=SimMarketConfig(symbols=("SIMA", "SIMB"), pattern_rate=0.08, seed=11),
        bars=1_600,
        spec=ChartSpec(window=32, width=64, height=64, sma=(), bollinger=False),
        train=TrainConfig(
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
        ),
        threads=1,
        tabular=TabularConfig(
            bars=900,
            window=32,
            pca_components=2,
            features=FeatureConfig(lookback=32),
            xgb=XgbTrainConfig(
                n_folds=2, num_boost_round=30, early_stopping_rounds=5, learning_rate=0.2
            ),
        ),
    )


def register(sub: Any) -> None:
    p = sub.add_parser("model", help="build, inspect or verify model bundles")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION")
    msub.required = True
    boot = msub.add_parser(
        "bootstrap", help="build the default bundle from the simulated market (CPU)"
    )
    boot.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"bundle directory (default {DEFAULT_OUT})"
    )
    boot.add_argument(
        "--quick", action="store_true", help="tiny config that finishes in seconds (weak model)"
    )
    boot.add_argument("--config", type=Path, help="bootstrap config YAML (BootstrapConfig fields)")
    boot.add_argument(
        "--checkpoints", type=Path, help="checkpoint directory (resume an interrupted run)"
    )
    boot.set_defaults(func=_bootstrap)
    info = msub.add_parser("info", help="print a bundle's model card summary")
    info.add_argument("bundle", type=Path)
    info.add_argument("--json", action="store_true", help="print the whole model card as JSON")
    info.set_defaults(func=_info)
    verify = msub.add_parser("verify", help="check every file of a bundle against its model card")
    verify.add_argument("bundle", type=Path)
    verify.add_argument("--spec-hash", help="also require this chart spec hash")
    verify.set_defaults(func=_verify)


def bootstrap(
    cfg: BootstrapConfig, out: Path, *, checkpoints: Path | None = None
) -> tuple[ModelCard, float]:
    """Build the full bundle (CLIP, calibration, XGBoost, fusion); returns its model card and the wall time in seconds."""
    started = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    frame = simulate_frame(cfg.market, SIM_START, cfg.bars)
    splits = samples_from_bars(frame, cfg.spec, cfg.samples)
    data_seconds = time.perf_counter() - started
    log.info(
        "dataset.built",
        source="sim",
        data_seconds=round(data_seconds, 2),
        **{f"{name}_samples": len(s) for name, s in splits.items()},
        **{f"train_{k}": v for k, v in direction_counts(splits["train"].direction).items()},
    )
    market_hash = msgspec.json.encode(
        {"market": cfg.market, "bars": cfg.bars, "samples": cfg.samples}
    )
    dataset = DatasetRef(
        source=f"sim:seed={cfg.market.seed}:bars={cfg.bars}",
        manifest_hash=hashlib.sha256(market_hash).hexdigest()[:16],
        counts={name: len(s) for name, s in splits.items()},
    )
    building = out.with_name(f".{out.name}.building")
    if building.exists():
        shutil.rmtree(building)
    train_started = time.perf_counter()
    card = train_bundle(
        splits=splits,
        spec=cfg.spec,
        dataset=dataset,
        cfg=cfg.train,
        out=building,
        checkpoints=checkpoints,
        device="cpu",
        extra_metrics={"data_seconds": data_seconds},
    )
    train_seconds = time.perf_counter() - train_started
    card = fit_tabular(cfg, building)
    _publish(building, out)
    wall = time.perf_counter() - started
    log.info(
        "model.bootstrapped",
        out=str(out),
        bundle_id=card.bundle_id,
        wall_seconds=round(wall, 1),
        train_and_calibrate_seconds=round(train_seconds, 1),
        tabular_seconds=round(card.metrics.get("tabular_seconds", 0.0), 1),
    )
    return card, wall


def _publish(building: Path, out: Path) -> None:
    """Move the finished bundle into place (the old one, if any, is replaced in two renames)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(out, old)
            os.replace(building, out)
            shutil.rmtree(old)
        else:
            os.replace(building, out)
    except OSError as e:
        msg = f"{out}: cannot move the built bundle into place ({e})"
        raise BundleError(msg) from None


def fit_tabular(cfg: BootstrapConfig, bundle: Path) -> ModelCard:
    """XGBoost on features + CLIP outputs of fresh bars, fusion on its out-of-fold predictions; added to the bundle."""
    tab = cfg.tabular
    started = time.perf_counter()
    market = msgspec.structs.replace(cfg.market, seed=cfg.market.seed + tab.seed_offset)
    batches = frame_batches(simulate_frame(market, SIM_START, tab.bars))
    server = ModelServer.load(
        bundle, config=InferenceConfig(device="cpu", threads=cfg.threads, warmup_batches=1)
    )
    vision = ClipVision(server=server)
    scored: list[VisionScores] = []

    def clip_columns(windows: Sequence[Window]) -> tuple[tuple[str, ...], FloatArray]:
        scores = vision.score_windows(windows)
        scored.append(scores)
        return vision_columns(scores, None)

    store = BarStoreConfig(window=tab.window, bar_seconds=market.bar_seconds)
    ds = build_dataset(
        batches, store, FeatureEngine(config=tab.features), horizon=tab.horizon, extra=clip_columns
    )
    scored_seconds = time.perf_counter() - started
    x, names = ds.x, ds.feature_names
    pca = None
    if tab.pca_components:
        embeddings = np.vstack([s.embeddings for s in scored])
        pca = fit_pca(embeddings, tab.pca_components)  # unsupervised, on these training rows only
        x = np.hstack([x, pca.transform(embeddings)])
        names = (*names, *(f"clip_pc{i}" for i in range(len(pca.components))))
    rows = ds.labelled()
    x, y, ts = x[rows], ds.y[rows], ds.ts[rows]  # the labelled rows only, from here on
    technical = np.array([not n.startswith("clip_") for n in names])

    def fit_xgb(columns: npt.NDArray[np.bool_]) -> TrainResult:
        return train_xgb(
            x[:, columns],
            y,
            ts=ts,
            label_end=ds.label_end[rows],
            feature_names=tuple(n for n, keep in zip(names, columns, strict=True) if keep),
            config=tab.xgb,
            bar_seconds=market.bar_seconds,
            horizon_bars=tab.horizon,
            feature_config=msgspec.to_builtins(tab.features),
        )

    result = fit_xgb(np.ones(len(names), dtype=bool))
    alone = fit_xgb(technical)  # the same folds (they depend on time only), no CLIP columns
    probs = {"clip": np.concatenate([s.p_up for s in scored])[rows], "xgb": result.oof}
    fusion, holdout = fit_fusion(tab, probs, y, ts, compare={"xgb_technical": alone.oof})
    covered = np.isfinite(result.oof)
    live = {m: p[covered] for m, p in probs.items()}
    fused = _combine(fusion, live)
    seen = _recalibrated(fusion.recalibrate, live)  # what FusionEngine measures disagreement on
    disagreement = np.abs(seen["clip"] - seen["xgb"])
    confidence = np.abs(2 * fused - 1) * np.maximum(
        0.0, 1.0 - fusion.disagreement_penalty * disagreement
    )
    source = f"sim:seed={market.seed}:bars={tab.bars}"
    model = _with_drift(result, x[covered], confidence, tab, source)
    alone_covered = np.isfinite(alone.oof)
    technical_model = _with_drift(
        alone,
        x[alone_covered][:, technical],
        np.abs(2 * alone.oof[alone_covered] - 1),  # what mode xgb's confidence is
        tab,
        source,
    )
    files = {f"{XGB_DIR}/{name}": data for name, data in _xgb_files(model).items()}
    files |= {
        f"{XGB_TECHNICAL_DIR}/{name}": data for name, data in _xgb_files(technical_model).items()
    }
    files[FUSION_FILE] = msgspec.json.format(msgspec.json.encode(fusion)) + b"\n"
    if pca is not None:
        files[PCA_FILE] = msgspec.json.format(msgspec.json.encode(pca)) + b"\n"
    seconds = time.perf_counter() - started
    metrics = {
        **{f"xgb_oof_{k}": v for k, v in result.metrics.items()},
        **{f"xgb_technical_oof_{k}": v for k, v in alone.metrics.items()},
        **{f"clip_oof_{k}": v for k, v in summary(y[covered], probs["clip"][covered]).items()},
        **holdout,
        "tabular_rows": float(rows.sum()),
        "tabular_clip_seconds": scored_seconds,
        "tabular_seconds": seconds,
    }
    stage = {
        "source": f"sim:seed={market.seed}:bars={tab.bars}:symbols={len(market.symbols)}",
        "config": msgspec.to_builtins(tab),
        "feature_names": list(names),
        "fusion": msgspec.to_builtins(fusion),
        "xgb_rounds": model.meta.best_iteration + 1,
        "importance_top": dict(sorted(model.meta.importance.items(), key=lambda kv: -kv[1])[:10]),
        "files": sorted(files),
    }
    card = add_to_bundle(bundle, files=files, metrics=metrics, stages={"tabular": stage})
    log.info(
        "tabular.trained",
        rows=int(rows.sum()),
        xgb_oof_auc=round(result.metrics.get("auc", float("nan")), 4),
        clip_holdout_auc=round(holdout["clip_holdout_auc"], 4),
        xgb_technical_holdout_auc=round(holdout["xgb_technical_holdout_auc"], 4),
        xgb_holdout_auc=round(holdout["xgb_holdout_auc"], 4),
        fused_holdout_auc=round(holdout["fused_holdout_auc"], 4),
        fusion=fusion.method,
        seconds=round(seconds, 1),
    )
    return card


def _with_drift(
    result: TrainResult, x: FloatArray, confidence: FloatArray, tab: TabularConfig, source: str
) -> XgbModel:
    """The trained model with its drift reference (its columns + the confidence) and provenance."""
    names = [*result.model.feature_names, "confidence"]
    reference = drift_reference(np.column_stack([x, confidence]), names)
    model = result.model
    model.meta = msgspec.structs.replace(
        model.meta,
        drift_reference=msgspec.to_builtins(reference),
        extra={
            "train_config": msgspec.to_builtins(tab.xgb),
            "rows": len(result.oof),
            "source": source,
        },
    )
    return model


def fit_fusion(
    tab: TabularConfig,
    probs: dict[str, FloatArray],
    y: FloatArray,
    ts: npt.NDArray[np.int64],
    *,
    compare: dict[str, FloatArray] | None = None,
) -> tuple[FusionConfig, dict[str, float]]:
    """The fusion fitted on out-of-fold rows only, and its metrics on the last rows when fitted before them.

    compare: other models' out-of-fold probabilities, reported on the same last rows."""
    covered = np.all([np.isfinite(p) for p in probs.values()], axis=0)
    index = np.flatnonzero(covered)
    if index.size < 40:
        msg = f"only {index.size} out-of-fold rows to fit the fusion on: simulate more tabular bars"
        raise XgbError(msg)
    cut = int(ts[index[int(index.size * (1 - tab.holdout_fraction))]])
    early, late = covered & (ts < cut), covered & (ts >= cut)

    def fitted(keep: npt.NDArray[np.bool_]) -> FusionConfig:
        # CLIP's P(up) first mapped onto these rows (Platt on its logit), then the fusion on top.
        platt = fit_stacking({"clip": probs["clip"][keep]}, y[keep])
        maps = {"clip": Recalibration(a=platt.coef[0], b=platt.intercept)}
        calibrated = _recalibrated(maps, probs)
        if tab.fusion == "select":
            config = _select_fusion(tab, calibrated, y, ts, keep)
        elif tab.fusion == "weighted":
            config = FusionConfig(
                method="weighted",
                weights=dict(tab.weights),
                disagreement_penalty=tab.disagreement_penalty,
            )
        else:
            params = fit_stacking({m: p[keep] for m, p in calibrated.items()}, y[keep])
            config = FusionConfig(
                method="stacking",
                stacking=params,
                weights=dict(tab.weights),
                disagreement_penalty=tab.disagreement_penalty,
            )
        return msgspec.structs.replace(config, recalibrate=maps)

    before = fitted(early)
    held = {m: p[late] for m, p in probs.items()}
    held["fused"] = _combine(before, held)
    held |= _recalibrated(before.recalibrate, held)  # CLIP-only as the daemon would trade it
    held |= {m: p[late] for m, p in (compare or {}).items()}
    metrics = {
        f"{m}_holdout_{k}": v for m, p in held.items() for k, v in summary(y[late], p).items()
    }
    return fitted(covered), metrics


def _select_fusion(
    tab: TabularConfig,
    probs: dict[str, FloatArray],
    y: FloatArray,
    ts: npt.NDArray[np.int64],
    keep: npt.NDArray[np.bool_],
) -> FusionConfig:
    """The candidate with the lowest log loss on the last third of `keep` (in time), refitted on all of it.

    Log loss, not AUC: a proper score, steadier on a few thousand rows of a small edge, and it
    counts a model's miscalibration against it (AUC picked weights that only noise favoured)."""
    index = np.flatnonzero(keep)
    cut = int(ts[index[int(index.size * 2 / 3)]])
    fit, select = keep & (ts < cut), keep & (ts >= cut)
    weighted = [
        FusionConfig(
            method="weighted",
            weights={"clip": round(float(w), 1), "xgb": round(1.0 - float(w), 1)},
            disagreement_penalty=tab.disagreement_penalty,
        )
        for w in np.linspace(0.0, 1.0, 11)
    ]

    def stacking(rows: npt.NDArray[np.bool_]) -> FusionConfig:
        params = fit_stacking({m: p[rows] for m, p in probs.items()}, y[rows])
        return FusionConfig(
            method="stacking",
            stacking=params,
            weights=dict(tab.weights),
            disagreement_penalty=tab.disagreement_penalty,
        )

    held = {m: p[select] for m, p in probs.items()}
    candidates = [stacking(fit), *weighted]
    scores = [summary(y[select], _combine(c, held))["log_loss"] for c in candidates]
    best = int(np.nanargmin(scores))
    return stacking(keep) if best == 0 else candidates[best]


def _recalibrated(
    maps: Mapping[str, Recalibration], probs: dict[str, FloatArray]
) -> dict[str, FloatArray]:
    """Each model's probabilities through its map, as FusionEngine.recalibrated does row by row."""
    return {m: maps[m].apply_array(p) if m in maps else p for m, p in probs.items()}


def _combine(config: FusionConfig, probs: dict[str, FloatArray]) -> FloatArray:
    """The fused probability of each row, as the live FusionEngine computes it (before smoothing)."""
    probs = _recalibrated(config.recalibrate, probs)
    if config.method == "stacking" and config.stacking is not None:
        st = config.stacking
        z = st.intercept + sum(c * logit(probs[m]) for m, c in zip(st.models, st.coef, strict=True))
        return sigmoid(z)
    total = sum(config.weights.get(m, 0.0) for m in probs)
    return np.asarray(
        sum(config.weights.get(m, 0.0) * p for m, p in probs.items()) / total, dtype=np.float64
    )


def _xgb_files(model: XgbModel) -> dict[str, bytes]:
    """The model's files as XgbModel.save writes them."""
    with tempfile.TemporaryDirectory(prefix="vlmtrader-xgb-") as tmp:
        model.save(Path(tmp))
        return {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}


def _bootstrap(args: argparse.Namespace) -> int:
    cfg = quick_config() if args.quick else BootstrapConfig()
    if args.config is not None:
        try:
            cfg = msgspec.yaml.decode(args.config.read_bytes(), type=BootstrapConfig)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
            print(f"error: {args.config}: {e}", file=sys.stderr)
            return 2
    try:
        card, wall = bootstrap(cfg, args.out, checkpoints=args.checkpoints)
    except (ClipError, BundleError, XgbError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    print_summary(card, args.out)
    print(f"  built in {wall:.1f} s")
    return EXIT_OK


def _info(args: argparse.Namespace) -> int:
    try:
        card = read_card(args.bundle)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(card)).decode())
        return EXIT_OK
    print(f"bundle:      {args.bundle}")
    print(f"bundle id:   {card.bundle_id}")
    print(f"spec hash:   {card.spec_hash}")
    print(f"base:        {card.base} ({card.parameters:,} parameters)")
    print(f"dataset:     {card.dataset.source} ({card.dataset.manifest_hash})")
    print(f"classes:     {', '.join(card.prompts.classes)}")
    print(f"files:       {len(card.files)}")
    for name in (
        "pattern_accuracy",
        "pattern_macro_f1",
        "pattern_ece_before",
        "pattern_ece_after",
        "direction_auc",
        "direction_brier_after",
    ):
        if name in card.metrics:
            print(f"{name + ':':<24} {card.metrics[name]:.4f}")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from daemon.bundle_check import check_bundle
    from daemon.errors import InputError

    try:
        card = verify_bundle(args.bundle, spec_hash=args.spec_hash)
        checked = check_bundle(args.bundle, spec_hash=args.spec_hash)
    except (BundleError, InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    print(
        f"ok: {args.bundle} bundle {card.bundle_id}, {len(card.files)} files verified, spec {card.spec_hash}, "
        f"loaded and scored a {checked.bars}-bar chart (p_up {checked.p_up:.3f})"
    )
    return EXIT_OK
