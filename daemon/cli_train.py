"""`vlmtrader train clip --dataset DIR --out BUNDLE_DIR [--base NAME_OR_PATH]`: fine-tune, calibrate, save a bundle.

This module owns the `train` command; other modules add subcommands to it through
get_train_subparsers() (daemon.cli_train_xgb adds `xgb`).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import structlog

from daemon.errors import EXIT_CONFIG, EXIT_OK
from vlm_engine.bundle import BundleError, DatasetRef, ModelCard, save_bundle
from vlm_engine.calibrate.evaluate import calibrate_and_measure
from vlm_engine.clip import ClipError, ClipSamples, PromptSet, default_prompts, load_dataset_dir
from vlm_engine.clip.data import NO_PATTERN
from vlm_engine.clip.train import TrainConfig, main
from vlm_engine.render import ChartSpec

log = structlog.get_logger("daemon.cli_train")

EXIT_INPUT = 1
_TRAIN_SUBPARSERS: Any = None


def get_train_subparsers() -> Any:
    """The `train` command's subparsers, for modules that add their own `train X` (None before register)."""
    return _TRAIN_SUBPARSERS


def register(sub: Any) -> None:
    global _TRAIN_SUBPARSERS
    p = sub.add_parser("train", help="train models (clip, xgb) into a bundle")
    tsub = p.add_subparsers(dest="train_command", metavar="MODEL")
    tsub.required = True
    _TRAIN_SUBPARSERS = tsub
    clip = tsub.add_parser(
        "clip", help="fine-tune CLIP on a chart/text dataset and save a calibrated bundle"
    )
    clip.add_argument(
        "--dataset",
        required=True,
        type=Path,
        help="dataset directory (manifest.json + DatasetDict)",
    )
    clip.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    clip.add_argument(
        "--base",
        default="",
        help="pretrained CLIP name or path (default: the embedded compact CLIP)",
    )
    clip.add_argument("--config", type=Path, help="training config YAML (TrainConfig fields)")
    clip.add_argument("--epochs", type=int, help="override epochs")
    clip.add_argument("--batch-size", type=int, help="override batch size")
    clip.add_argument("--seed", type=int, help="override seed")
    clip.add_argument("--device", default="auto", help="auto, cpu or cuda")
    clip.add_argument(
        "--checkpoints", type=Path, help="checkpoint directory (resumes from last.pt)"
    )
    clip.add_argument("--folds", type=int, default=5, help="k for cross-validating the calibration")
    clip.add_argument(
        "--accelerate", action="store_true", help="run under `accelerate launch` (DDP)"
    )
    clip.set_defaults(func=_train_clip)
    try:
        from daemon.cli_train_xgb import add_xgb_parser
    except ModuleNotFoundError as e:
        if e.name != "daemon.cli_train_xgb":
            raise
    else:
        add_xgb_parser(tsub)


def load_train_config(path: Path | None, args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from YAML (or defaults) with the command-line overrides applied."""
    cfg = TrainConfig()
    if path is not None:
        try:
            cfg = msgspec.yaml.decode(path.read_bytes(), type=TrainConfig)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
            msg = f"{path}: {e}"
            raise ValueError(msg) from None
    overrides = {
        name: value
        for name, value in (
            ("epochs", getattr(args, "epochs", None)),
            ("batch_size", getattr(args, "batch_size", None)),
            ("seed", getattr(args, "seed", None)),
        )
        if value is not None
    }
    if getattr(args, "base", ""):
        overrides["base"] = args.base
    try:
        return msgspec.convert({**msgspec.to_builtins(cfg), **overrides}, TrainConfig)
    except msgspec.ValidationError as e:
        msg = f"train config: {e}"
        raise ValueError(msg) from None


def train_bundle(
    *,
    splits: dict[str, ClipSamples],
    spec: ChartSpec,
    dataset: DatasetRef,
    cfg: TrainConfig,
    out: Path,
    prompts: PromptSet | None = None,
    checkpoints: Path | None = None,
    device: str = "auto",
    folds: int = 5,
    accelerator: Any = None,
    extra_metrics: dict[str, float] | None = None,
) -> ModelCard:
    """Train, calibrate on validation, measure on test and save the bundle: the whole offline CLIP path."""
    if splits["train"].image_size != (spec.height, spec.width):
        msg = f"dataset images are {splits['train'].image_size}, the chart spec draws {spec.height}x{spec.width}"
        raise ClipError(msg)
    classes = sorted(set(splits["train"].patterns) - {NO_PATTERN})
    if NO_PATTERN in splits["train"].patterns:
        classes = [NO_PATTERN, *classes]
    prompts = prompts or default_prompts(classes)
    result = main(
        cfg,
        train=splits["train"],
        val=splits["validation"],
        prompts=prompts,
        checkpoint_dir=checkpoints,
        device=device,
        accelerator=accelerator,
    )
    if accelerator is not None and not accelerator.is_main_process:
        return ModelCard(
            bundle_id="",
            spec_hash=spec.spec_hash(),
            base=cfg.base,
            parameters=0,
            prompts=prompts,
            dataset=dataset,
        )
    calibration, metrics, report, figures = calibrate_and_measure(
        result.parts, prompts, splits["validation"], splits["test"], k_folds=folds, seed=cfg.seed
    )
    metrics = {**metrics, **(extra_metrics or {}), "best_epoch": float(result.best_epoch)}
    return save_bundle(
        out,
        parts=result.parts,
        spec=spec,
        prompts=prompts,
        dataset=dataset,
        base=cfg.base,
        calibration=calibration,
        train_config=msgspec.to_builtins(cfg),
        history=[msgspec.to_builtins(h) for h in result.history],
        metrics=metrics,
        calibration_report=report,
        figures=figures,
    )


def print_summary(card: ModelCard, out: Path) -> None:
    m = card.metrics
    print(
        f"ok: {out} bundle {card.bundle_id} spec {card.spec_hash} ({card.parameters:,} parameters)\n"
        f"  pattern accuracy {m.get('pattern_accuracy', 0):.3f}  macro-F1 {m.get('pattern_macro_f1', 0):.3f} "
        f"on {card.dataset.counts.get('test', 0)} held-out charts  "
        f"ECE {m.get('pattern_ece_before', 0):.3f} -> {m.get('pattern_ece_after', 0):.3f}\n"
        f"  direction AUC {card.figure('direction_auc')}  Brier {m.get('direction_brier_after', 0):.4f}  "
        f"recall@1 i->t {m.get('recall_image_to_text_at_1', 0):.3f} t->i {m.get('recall_text_to_image_at_1', 0):.3f}"
    )
    held = [
        f"{name} {card.figure(f'{name}_holdout_auc', 4)}"
        for name in ("clip", "xgb_technical", "xgb", "fused")
        if f"{name}_holdout_auc" in m or f"{name}_holdout_auc" in card.unmeasured
    ]
    if held:
        print(f"  held-out direction AUC: {'  '.join(held)}")
    if card.trained_on is not None:
        t = card.trained_on
        print(
            f"  {t.bar_seconds} s bars, horizon {t.horizon_bars} bars, {len(t.symbols)} symbol(s); "
            f"held out from {datetime.fromtimestamp(t.holdout_start, tz=UTC):%Y-%m-%d %H:%M} UTC"
        )


def _train_clip(args: argparse.Namespace) -> int:
    try:
        cfg = load_train_config(args.config, args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    accelerator = None
    if args.accelerate:
        try:
            from accelerate import Accelerator
        except ImportError:
            print(
                "error: --accelerate needs the multigpu extra (pip install 'vlmtrader[multigpu]')",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        accelerator = Accelerator()
    try:
        splits, info = load_dataset_dir(args.dataset)
        spec = info.chart_spec()
        dataset = DatasetRef(
            source=str(args.dataset),
            manifest_hash=info.manifest_hash,
            counts={name: len(s) for name, s in splits.items()},
        )
        card = train_bundle(
            splits=splits,
            spec=spec,
            dataset=dataset,
            cfg=cfg,
            out=args.out,
            checkpoints=args.checkpoints,
            device=args.device,
            folds=args.folds,
            accelerator=accelerator,
        )
    except (ClipError, BundleError, msgspec.ValidationError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    if card.bundle_id:
        print_summary(card, args.out)
    return EXIT_OK
