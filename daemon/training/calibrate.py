"""`vlmtrader calibrate` as a library: refit a bundle's temperature and Platt scaling on a chart dataset's validation split."""

from __future__ import annotations

from pathlib import Path

import msgspec

from vlm_engine.bundle import ModelCard, load_bundle, update_calibration
from vlm_engine.calibrate.evaluate import calibrate_and_measure
from vlm_engine.calibrate.params import Calibration
from vlm_engine.clip import ClipError, load_dataset_dir


class Calibrated(msgspec.Struct, frozen=True, kw_only=True):
    """The rewritten card, the fitted calibration, its test metrics and the figure names."""

    card: ModelCard
    calibration: Calibration
    metrics: dict[str, float]
    figures: tuple[str, ...]


def calibrate_bundle(bundle_dir: Path, dataset_dir: Path, *, folds: int, seed: int) -> Calibrated:
    """Fit on validation (cross-validated over `folds`), measure on test, rewrite the bundle's calibration.

    Raises BundleError (the bundle) or ClipError (the dataset, or a chart spec other than the bundle's)."""
    bundle = load_bundle(bundle_dir)
    splits, info = load_dataset_dir(dataset_dir)
    if info.spec_hash and info.spec_hash != bundle.card.spec_hash:
        msg = (
            f"{dataset_dir} was rendered with chart spec {info.spec_hash}, "
            f"the bundle expects {bundle.card.spec_hash}"
        )
        raise ClipError(msg)
    calibration, metrics, report, figures = calibrate_and_measure(
        bundle.parts,
        bundle.prompts,
        splits["validation"],
        splits["test"],
        k_folds=folds,
        seed=seed,
    )
    card = update_calibration(
        bundle_dir,
        calibration=calibration,
        metrics=metrics,
        report=report,
        figures=figures,
        stage={
            "command": "vlmtrader calibrate",
            "dataset": str(dataset_dir),
            "manifest_hash": info.manifest_hash,
            "fitted_on": "validation",
            "measured_on": "test",
            "folds": folds,
        },
    )
    return Calibrated(
        card=card, calibration=calibration, metrics=metrics, figures=tuple(sorted(figures))
    )
