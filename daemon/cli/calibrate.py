"""`vlmtrader calibrate --bundle DIR --dataset DIR`: fit temperature/Platt on validation, measure on test, update the bundle."""

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
    from vlm_engine.bundle import BundleError, load_bundle, update_calibration
    from vlm_engine.calibrate.evaluate import calibrate_and_measure
    from vlm_engine.clip import ClipError, load_dataset_dir

    try:
        bundle = load_bundle(args.bundle)
        splits, info = load_dataset_dir(args.dataset)
        if info.spec_hash and info.spec_hash != bundle.card.spec_hash:
            print(
                f"error: {args.dataset} was rendered with chart spec {info.spec_hash}, "
                f"the bundle expects {bundle.card.spec_hash}",
                file=sys.stderr,
            )
            return EXIT_INPUT
        calibration, metrics, report, figures = calibrate_and_measure(
            bundle.parts,
            bundle.prompts,
            splits["validation"],
            splits["test"],
            k_folds=args.folds,
            seed=args.seed,
        )
        card = update_calibration(
            args.bundle,
            calibration=calibration,
            metrics=metrics,
            report=report,
            figures=figures,
            stage={
                "command": "vlmtrader calibrate",
                "dataset": str(args.dataset),
                "manifest_hash": info.manifest_hash,
                "fitted_on": "validation",
                "measured_on": "test",
                "folds": args.folds,
            },
        )
    except (BundleError, ClipError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    print(
        f"ok: {args.bundle} bundle {card.bundle_id}: temperature {calibration.pattern_temperature:.3f}, "
        f"ECE {metrics['pattern_ece_before']:.4f} -> {metrics['pattern_ece_after']:.4f}, "
        f"direction Platt a={calibration.direction_a:.3f} b={calibration.direction_b:.3f}; "
        f"figures: {', '.join(sorted(figures))}"
    )
    return EXIT_OK
