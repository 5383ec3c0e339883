"""`vlmtrader calibrate --bundle DIR --dataset DIR`: fit temperature/Platt on validation, measure on test, update the bundle (daemon.training.calibrate)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from daemon.errors import EXIT_OK

EXIT_INPUT = 1


def register(sub: Any) -> None:
    p = sub.add_parser(
        "calibrate", help="calibrate a bundle's CLIP outputs on a dataset's validation split"
    )
    p.add_argument("--bundle", required=True, type=Path)
    p.add_argument("--dataset", required=True, type=Path)
    p.add_argument("--folds", type=int, default=5, help="k for cross-validating the parameters")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_calibrate)


def _calibrate(args: argparse.Namespace) -> int:
    # torch and the bundle code load here, when the command runs (see daemon/cli/__init__.py).
    from daemon.training.calibrate import calibrate_bundle
    from vlm_engine.bundle import BundleError
    from vlm_engine.clip import ClipError

    try:
        done = calibrate_bundle(args.bundle, args.dataset, folds=args.folds, seed=args.seed)
    except (BundleError, ClipError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    c, m = done.calibration, done.metrics
    print(
        f"ok: {args.bundle} bundle {done.card.bundle_id}: temperature {c.pattern_temperature:.3f}, "
        f"ECE {m['pattern_ece_before']:.4f} -> {m['pattern_ece_after']:.4f}, "
        f"direction Platt a={c.direction_a:.3f} b={c.direction_b:.3f}; "
        f"figures: {', '.join(done.figures)}"
    )
    return EXIT_OK
