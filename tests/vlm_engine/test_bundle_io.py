from __future__ import annotations

import json
import shutil
from pathlib import Path

import msgspec
import pytest

from tests.vlm_engine.clip_helpers import SPEC, tiny_bundle
from vlm_engine.bundle import (
    BundleError,
    BundleSpecMismatch,
    add_to_bundle,
    load_bundle,
    read_card,
    update_calibration,
    verify_bundle,
)
from vlm_engine.calibrate import Calibration


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "b"
    tiny_bundle(out)
    return out


@pytest.fixture
def bundle(saved: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "b"
    shutil.copytree(saved, copy)
    return copy


def test_load_bundle_when_complete_then_spec_prompts_calibration_and_card_round_trip(bundle: Path):
    loaded = load_bundle(bundle, spec_hash=SPEC.spec_hash())
    assert loaded.spec == SPEC
    assert loaded.card.spec_hash == SPEC.spec_hash()
    assert loaded.calibration.fitted
    assert "none" in loaded.prompts.classes
    assert {
        "clip/model.safetensors",
        "clip/tokenizer.json",
        "calibration.json",
        "chart_spec.json",
    } <= set(loaded.card.files)
    assert any(f.endswith(".png") for f in loaded.card.figures)
    assert "pattern_ece_after" in loaded.card.metrics


def test_verify_bundle_when_weights_changed_then_corrupt_error_names_the_file(bundle: Path):
    weights = bundle / "clip" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"corrupt bundle, clip/model.safetensors"):
        load_bundle(bundle)


def test_verify_bundle_when_a_file_is_missing_then_incomplete(bundle: Path):
    (bundle / "clip" / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match=r"incomplete bundle, missing clip/tokenizer.json"):
        verify_bundle(bundle)


def test_verify_bundle_when_card_is_missing_or_garbage_then_clear_errors(bundle: Path):
    card = bundle / "model_card.json"
    card.write_text("{not json")
    with pytest.raises(BundleError, match="corrupt model card"):
        read_card(bundle)
    card.unlink()
    with pytest.raises(BundleError, match=r"model_card\.json is missing"):
        verify_bundle(bundle)


def test_load_bundle_when_other_chart_spec_then_spec_mismatch(bundle: Path):
    other = msgspec.structs.replace(SPEC, window=33)
    with pytest.raises(BundleSpecMismatch, match="trained on chart spec"):
        load_bundle(bundle, spec_hash=other.spec_hash())


def test_verify_bundle_when_spec_file_edited_and_card_rehashed_then_spec_hash_disagrees(
    bundle: Path,
):
    import hashlib

    spec_file = bundle / "chart_spec.json"
    spec_file.write_bytes(msgspec.json.encode(msgspec.structs.replace(SPEC, window=33)))
    card = json.loads((bundle / "model_card.json").read_text())
    card["files"]["chart_spec.json"] = hashlib.sha256(spec_file.read_bytes()).hexdigest()
    (bundle / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError):
        verify_bundle(bundle)


def test_load_bundle_when_directory_missing_then_bundle_error(tmp_path: Path):
    with pytest.raises(BundleError, match="no such bundle directory"):
        load_bundle(tmp_path / "absent")


def test_update_calibration_when_rewritten_then_still_verifies_with_new_values(bundle: Path):
    before = read_card(bundle)
    card = update_calibration(
        bundle,
        calibration=Calibration(pattern_temperature=2.5, fitted=True),
        metrics={"pattern_ece_after": 0.01},
        report={"k_folds": 3},
        figures={"extra.png": b"\x89PNG"},
    )
    assert verify_bundle(bundle).bundle_id == card.bundle_id != before.bundle_id
    assert load_bundle(bundle).calibration.pattern_temperature == 2.5
    assert "figures/extra.png" in card.figures


def test_add_to_bundle_when_a_metric_is_nan_then_card_reads_back_and_says_why(bundle: Path):
    card = add_to_bundle(
        bundle,
        files={},
        metrics={"clip_holdout_auc": float("nan"), "clip_holdout_brier": 0.25, "odd": float("inf")},
        unmeasured={"clip_holdout_auc": "one class only"},
    )
    read = read_card(bundle)  # JSON has no NaN: a NaN metric once made the card unreadable
    assert read == card
    assert "clip_holdout_auc" not in read.metrics
    assert read.figure("clip_holdout_auc") == "one class only"
    assert read.figure("odd") == "not finite"
    assert read.figure("clip_holdout_brier") == "0.250"
    assert read.figure("absent") == "-"
    later = add_to_bundle(bundle, files={}, metrics={"clip_holdout_auc": 0.6})
    assert later.figure("clip_holdout_auc") == "0.600"
    assert "clip_holdout_auc" not in later.unmeasured
