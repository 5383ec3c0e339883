"""`vlmtrader model bootstrap|info|verify`: build the default bundle from the simulated market, inspect or check one."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec
import structlog
import torch

from daemon.cli_train import print_summary, train_bundle
from daemon.errors import EXIT_OK
from strategy.market_sim import SimMarketConfig, simulate_frame
from vlm_engine.bundle import BundleError, DatasetRef, read_card, verify_bundle
from vlm_engine.clip import ClipError, ClipModelConfig
from vlm_engine.clip.quickset import QuicksetConfig, direction_counts, samples_from_bars
from vlm_engine.clip.train import TrainConfig
from vlm_engine.render import ChartSpec

log = structlog.get_logger("daemon.cli_model")

EXIT_INPUT = 1
DEFAULT_OUT = Path("state/bundles/default")
SIM_START = datetime(2024, 1, 1, tzinfo=UTC)

# The default model input: the last 20 bars as plain candles at 128 px (6 px per candle), because the
# compact CLIP learns the planted patterns from this within the CPU budget; with 40 bars, overlays
# and volume (3 px per candle) it stayed at chance in the same budget.
DEFAULT_SPEC = ChartSpec(window=20, width=128, height=128, volume=False, bollinger=False, sma=())


class BootstrapConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Simulated bars -> planted-pattern charts -> CLIP training -> calibration, all seeded."""

    market: SimMarketConfig = msgspec.field(
        default_factory=lambda: SimMarketConfig(
            symbols=tuple(f"SIM{c}" for c in "ABCDEFGH"), pattern_rate=0.05, seed=11
        )
    )
    bars: Annotated[int, msgspec.Meta(gt=0)] = 20_000
    spec: ChartSpec = DEFAULT_SPEC
    samples: QuicksetConfig = msgspec.field(default_factory=QuicksetConfig)
    train: TrainConfig = msgspec.field(
        default_factory=lambda: TrainConfig(
            epochs=8, learning_rate=1e-3, warmup_steps=30, patience=3, min_epochs=4, progress=False
        )
    )
    threads: Annotated[int, msgspec.Meta(ge=0)] = 2


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
) -> tuple[Any, float]:
    """Build the bundle; returns its model card and the wall time in seconds."""
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
    import hashlib

    dataset = DatasetRef(
        source=f"sim:seed={cfg.market.seed}:bars={cfg.bars}",
        manifest_hash=hashlib.sha256(market_hash).hexdigest()[:16],
        counts={name: len(s) for name, s in splits.items()},
    )
    train_started = time.perf_counter()
    card = train_bundle(
        splits=splits,
        spec=cfg.spec,
        dataset=dataset,
        cfg=cfg.train,
        out=out,
        checkpoints=checkpoints,
        device="cpu",
        extra_metrics={"data_seconds": data_seconds},
    )
    train_seconds = time.perf_counter() - train_started
    wall = time.perf_counter() - started
    log.info(
        "model.bootstrapped",
        out=str(out),
        bundle_id=card.bundle_id,
        wall_seconds=round(wall, 1),
        train_and_calibrate_seconds=round(train_seconds, 1),
    )
    return card, wall


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
    except (ClipError, BundleError) as e:
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
    try:
        card = verify_bundle(args.bundle, spec_hash=args.spec_hash)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    print(
        f"ok: {args.bundle} bundle {card.bundle_id}, {len(card.files)} files verified, spec {card.spec_hash}"
    )
    return EXIT_OK
