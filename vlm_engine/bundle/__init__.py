"""Model bundles: save, verify and load the directory the daemon serves."""

from __future__ import annotations

from vlm_engine.bundle.bundle import (
    Bundle,
    add_to_bundle,
    check_files,
    check_spec_hash,
    load_bundle,
    publish_directory,
    save_bundle,
    update_calibration,
    verify_bundle,
)
from vlm_engine.bundle.card import DatasetRef, ModelCard, TrainedOn, read_card
from vlm_engine.bundle.errors import BundleError, BundleSpecMismatch

__all__ = [
    "Bundle",
    "BundleError",
    "BundleSpecMismatch",
    "DatasetRef",
    "ModelCard",
    "TrainedOn",
    "add_to_bundle",
    "check_files",
    "check_spec_hash",
    "load_bundle",
    "publish_directory",
    "read_card",
    "save_bundle",
    "update_calibration",
    "verify_bundle",
]
