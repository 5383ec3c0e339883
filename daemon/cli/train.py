"""`vlmtrader train clip|xgb`: fine-tune CLIP into a calibrated bundle (daemon.training.clip), or XGBoost into one (daemon/cli/train_xgb.py)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from daemon.cli import train_xgb
from daemon.cli.ray_flag import add_ray_argument
from daemon.errors import EXIT_CONFIG, EXIT_OK, InputError

if TYPE_CHECKING:
    from vlm_engine.bundle import ModelCard
    from vlm_engine.clip.train import TrainConfig

EXIT_INPUT = 1
C = TypeVar("C")


def register(sub: Any) -> None:
    p = sub.add_parser("train", help="train models (clip, xgb) into a bundle")
    tsub = p.add_subparsers(dest="train_command", metavar="MODEL")
    tsub.required = True
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
    add_ray_argument(clip)
    clip.add_argument(
        "--workers",
        type=int,
        default=1,
        help="with --ray: Ray Train workers (DDP), each a shard of every batch; --dataset and "
        "--checkpoints on paths every node sees (default 1)",
    )
    clip.set_defaults(func=_train_clip)
    train_xgb.add_xgb_parser(tsub)


def load_yaml_config(path: Path | None, default: C, kind: type[C]) -> C:
    """A config struct from a YAML file (`default` without one); a bad file is a one-line
    ValueError naming it."""
    if path is None:
        return default
    try:
        return msgspec.yaml.decode(path.read_bytes(), type=kind)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
        msg = f"{path}: {' '.join(str(e).split())}"
        raise ValueError(msg) from None


def load_train_config(path: Path | None, args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from YAML (or defaults) with the command-line overrides applied."""
    from vlm_engine.clip.train import TrainConfig  # torch: only when a command trains

    cfg = load_yaml_config(path, TrainConfig(), TrainConfig)
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
    # torch, transformers and the bundle code load here, when training runs (see daemon/cli/__init__.py).
    from daemon.training.clip import train_bundle
    from vlm_engine.bundle import BundleError, DatasetRef
    from vlm_engine.clip import ClipError, load_dataset_dir

    try:
        cfg = load_train_config(args.config, args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.ray is not None and args.accelerate:
        print(
            "error: --ray and --accelerate are two ways to train across workers: pick one",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if args.workers < 1 or (args.workers > 1 and args.ray is None):
        print(f"error: --workers {args.workers}: needs --ray and at least 1", file=sys.stderr)
        return EXIT_CONFIG
    if args.ray is not None:  # before reading the dataset: an unreachable cluster fails at once
        from daemon.cluster.errors import ClusterError
        from daemon.cluster.session import check_reachable, import_ray

        try:
            import_ray()
            check_reachable(args.ray)
        except ClusterError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_INPUT
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
            ray_address=args.ray,
            ray_workers=args.workers,
            dataset_dir=args.dataset,
        )
    except (ClipError, BundleError, InputError, msgspec.ValidationError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    if card.bundle_id:
        print_summary(card, args.out)
    return EXIT_OK
