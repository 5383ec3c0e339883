from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from daemon.cli import build_parser, main
from daemon.cli.train_xgb import run_train_xgb
from daemon.training import quick_config
from tests.vlm_engine.clip_helpers import chart_dataset
from vlm_engine.bundle import load_bundle, read_card


@pytest.fixture(scope="module")
def quick_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "bundle"
    assert main(["model", "bootstrap", "--quick", "--out", str(out)]) == 0
    return out


def test_bootstrap_when_quick_then_valid_bundle_with_metrics(
    quick_bundle: Path, capsys: pytest.CaptureFixture[str]
):
    card = read_card(quick_bundle)
    assert card.spec_hash == quick_config().spec.spec_hash()
    assert {"pattern_accuracy", "pattern_ece_before", "pattern_ece_after", "direction_auc"} <= set(
        card.metrics
    )
    assert main(["model", "verify", str(quick_bundle)]) == 0
    assert "files verified" in capsys.readouterr().out


def test_bootstrap_when_run_twice_then_same_bundle_id(quick_bundle: Path, tmp_path: Path):
    assert main(["model", "bootstrap", "--quick", "--out", str(tmp_path / "again")]) == 0
    assert read_card(tmp_path / "again").bundle_id == read_card(quick_bundle).bundle_id


def test_model_info_when_bundle_then_prints_id_and_classes(
    quick_bundle: Path, capsys: pytest.CaptureFixture[str]
):
    assert main(["model", "info", str(quick_bundle)]) == 0
    out = capsys.readouterr().out
    assert read_card(quick_bundle).bundle_id in out
    assert "none" in out


def test_model_verify_when_runtime_onnx_then_chart_scored_on_the_onnx_export(
    quick_bundle: Path, capsys: pytest.CaptureFixture[str]
):
    assert main(["model", "verify", str(quick_bundle), "--runtime", "onnx"]) == 0
    assert "on CLIP runtime onnx " in capsys.readouterr().out
    assert main(["model", "verify", str(quick_bundle), "--runtime", "torch"]) == 0
    assert "on CLIP runtime torch " in capsys.readouterr().out


def test_model_verify_when_weights_corrupt_then_exit_1_with_reason(
    quick_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(quick_bundle, copy)
    (copy / "clip" / "model.safetensors").write_bytes(b"garbage")
    assert main(["model", "verify", str(copy)]) == 1
    assert "corrupt bundle, clip/model.safetensors" in capsys.readouterr().err


def test_model_verify_when_other_spec_hash_then_exit_1(
    quick_bundle: Path, capsys: pytest.CaptureFixture[str]
):
    assert main(["model", "verify", str(quick_bundle), "--spec-hash", "0" * 16]) == 1
    assert "trained on chart spec" in capsys.readouterr().err


def test_train_parser_when_built_then_clip_and_xgb_are_under_train():
    parser = build_parser()
    xgb = parser.parse_args(["train", "xgb", "--dataset", "d", "--bundle", "b"])
    assert xgb.func is run_train_xgb
    clip = parser.parse_args(["train", "clip", "--dataset", "d", "--out", "o"])
    assert (clip.train_command, clip.dataset) == ("clip", Path("d"))


def test_train_clip_calibrate_and_train_xgb_when_dataset_dir_then_each_recorded_in_the_card(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from daemon.model import loader
    from vlm_engine.bundle import verify_bundle

    ds = chart_dataset(tmp_path)
    config = tmp_path / "train.yaml"
    config.write_bytes(
        msgspec.yaml.encode(msgspec.structs.replace(quick_config().train, min_epochs=1))
    )
    out = tmp_path / "bundle"
    args = [
        "train",
        "clip",
        "--dataset",
        str(ds),
        "--out",
        str(out),
        "--config",
        str(config),
        "--folds",
        "2",
    ]
    assert main(args) == 0
    assert "pattern accuracy" in capsys.readouterr().out
    assert read_card(out).dataset.manifest_hash
    with pytest.raises(loader.BundleUnusable) as refused:  # CLIP only: names the piece and command
        loader.load_bundle(out)
    assert "missing xgb/model.json" in str(refused.value)
    assert f"vlmtrader train xgb --dataset BARS --bundle {out}" in str(refused.value)

    assert main(["calibrate", "--bundle", str(out), "--dataset", str(ds), "--folds", "2"]) == 0
    assert "ECE" in capsys.readouterr().out
    assert load_bundle(out).calibration.fitted
    assert read_card(out).stages["calibrate"]["dataset"] == str(ds)

    assert (
        main(
            [
                "train",
                "xgb",
                "--dataset",
                str(ds),
                "--bundle",
                str(out),
                "--window",
                "40",
                "--folds",
                "2",
            ]
        )
        == 0
    )
    card = verify_bundle(out)
    assert {"xgb/model.json", "xgb/meta.json", "fusion.json"} <= set(card.files)
    assert card.stages["xgb"]["source"] == str(ds)
    assert card.trained_on is not None
    assert card.trained_on.bar_seconds == 60
    assert loader.load_bundle(out).xgb.meta.bar_seconds == 60


def test_train_clip_when_dataset_missing_then_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    assert (
        main(["train", "clip", "--dataset", str(tmp_path / "none"), "--out", str(tmp_path / "b")])
        == 1
    )
    assert "no such dataset directory" in capsys.readouterr().err


def test_bootstrap_when_out_unwritable_then_exit_1_with_one_line_after_quick_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = tmp_path / "boot.yaml"
    cfg.write_text("bars: 100\nthreads: 2\n")
    out = blocker / "bundle"  # its directory is a file: nothing can be written there
    assert main(["model", "bootstrap", "--quick", "--config", str(cfg), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"note: --quick replaces bars from {cfg}",  # the quick preset wins over the file
        f"error: --out {out}: cannot write its log {out}.build.log (File exists: {out.parent})",
    ]
