"""`vlmtrader model export-onnx`: a bundle built before the export gets it, parity checked on its
own test split; refusals write nothing (or leave INT8 out) with the reason; a crash mid-write
leaves a loadable bundle."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.model.loader import load_bundle as load_full_bundle
from tests.daemon.ml_helpers import quick_bundle
from vlm_engine.bundle import add_to_bundle, load_bundle, read_card, verify_bundle
from vlm_engine.bundle import bundle as bundle_io
from vlm_engine.infer import InferenceConfig, choose_engine, runtime_choice
from vlm_engine.infer.onnx_export import FP32_FILE, INT8_FILE, PARITY_FILE, quantize_dynamic_int8
from vlm_engine.infer.runtime_choice import batch_dependent_problem

ONNX_FILES = (FP32_FILE, INT8_FILE, PARITY_FILE)
CPU = InferenceConfig(device="cpu", threads=1, warmup_batches=1)


def without_export(tmp_path: Path, name: str = "old") -> Path:
    """A copy of the quick bundle as a build before the ONNX export made it (files, stage, id)."""
    copy = tmp_path / name
    shutil.copytree(quick_bundle(), copy)
    shutil.rmtree(copy / "onnx")
    card = json.loads((copy / "model_card.json").read_text())
    card["stages"].pop("onnx")
    card["files"] = {k: v for k, v in card["files"].items() if k not in ONNX_FILES}
    card["bundle_id"] = bundle_io._bundle_id(card["files"])
    (copy / "model_card.json").write_text(json.dumps(card))
    verify_bundle(copy)
    return copy


def test_export_onnx_when_bundle_has_no_export_then_added_parity_checked_and_served_on_onnx(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = without_export(tmp_path)
    before = read_card(old)
    assert main(["model", "export-onnx", str(old)]) == 0
    out = capsys.readouterr().out
    card = verify_bundle(old)  # every file, the new ones included, matches the card's sha256
    assert {FP32_FILE, PARITY_FILE} <= set(card.files)
    assert card.bundle_id != before.bundle_id
    stage = card.stages["onnx"]
    # parity measured on the build's own test split, rebuilt from the simulated market
    assert stage["test_charts"] == before.dataset.counts["test"]
    assert stage["parity"]["onnx_max_prob_gap"] <= runtime_choice.FP32_TOLERANCE
    assert f"bundle {card.bundle_id}: ONNX onnx" in out
    assert main(["model", "verify", str(old), "--runtime", "onnx"]) == 0
    assert "on CLIP runtime onnx " in capsys.readouterr().out


def test_export_onnx_when_bundle_has_dynamic_int8_then_rewritten_as_static(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = shutil.copytree(quick_bundle(), tmp_path / "dynamic")
    stage = {k: v for k, v in read_card(old).stages["onnx"].items() if k != "quantization"}
    stage["variants"] = ["fp32", "int8"]  # as `model build` wrote it before static INT8
    dynamic = quantize_dynamic_int8((old / FP32_FILE).read_bytes())
    add_to_bundle(old, files={INT8_FILE: dynamic}, stages={"onnx": stage})
    assert "dynamic INT8" in batch_dependent_problem(load_bundle(old))
    assert main(["model", "export-onnx", str(old)]) == 0
    assert "ONNX onnx, onnx-int8 added" in capsys.readouterr().out
    card = verify_bundle(old)
    assert card.stages["onnx"]["quantization"] == "static"
    assert (old / INT8_FILE).read_bytes() != dynamic
    assert batch_dependent_problem(load_bundle(old)) == ""


def test_export_onnx_when_int8_fails_parity_then_fp32_only_and_reason_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    old = without_export(tmp_path)
    monkeypatch.setattr(runtime_choice, "INT8_AUC", -1.0)  # no INT8 can be that close
    assert main(["model", "export-onnx", str(old)]) == 0
    out = capsys.readouterr().out
    assert "onnx-int8 not written: INT8 direction AUC" in out
    card = verify_bundle(old)
    assert FP32_FILE in card.files
    assert INT8_FILE not in card.files
    monkeypatch.undo()
    config = InferenceConfig(device="cpu", threads=1, warmup_batches=1, runtime="onnx-int8")
    engine, choice = choose_engine(load_bundle(old), config)
    assert engine.runtime == "onnx"  # the fallback from a refused INT8
    assert "has no int8 tower (INT8 direction AUC" in choice.refused["onnx-int8"]


def test_export_onnx_when_fp32_fails_parity_or_config_differs_then_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    old = without_export(tmp_path)
    card = (old / "model_card.json").read_bytes()
    other = tmp_path / "other.yaml"
    other.write_text("market: {seed: 12, symbols: [SIMA, SIMB]}\nbars: 2500\n")
    assert main(["model", "export-onnx", str(old), "--config", str(other)]) == 1
    err = capsys.readouterr().err.strip()
    assert "cannot rebuild its test split" in err
    assert len(err.splitlines()) == 1
    monkeypatch.setattr(runtime_choice, "FP32_TOLERANCE", -1.0)
    assert main(["model", "export-onnx", str(old), "--no-int8"]) == 1
    err = capsys.readouterr().err.strip()
    assert "ONNX export not written: fp32 probabilities differ from torch's" in err
    assert len(err.splitlines()) == 1
    assert (old / "model_card.json").read_bytes() == card
    assert not (old / "onnx").exists() or not any((old / "onnx").iterdir())


class Crash(BaseException):
    """The process dying at this point (no except clause of the code under test catches it)."""


@pytest.mark.parametrize("over_existing", [False, True], ids=["new", "replacing"])
def test_add_to_bundle_when_crashing_at_any_write_then_bundle_still_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, over_existing: bool
) -> None:
    source = quick_bundle()
    files = {name: (source / name).read_bytes() for name in ONNX_FILES}
    stages = {"onnx": read_card(source).stages["onnx"]}
    replace = os.replace
    calls = 0
    crash_at = 0
    while True:
        bundle = shutil.copytree(source, tmp_path / f"b{crash_at}") if over_existing else None
        bundle = bundle or without_export(tmp_path, f"b{crash_at}")
        before = read_card(bundle)
        calls = 0

        def crashing(src: object, dst: object, _at: int = crash_at) -> None:
            nonlocal calls
            calls += 1
            if calls > _at:
                raise Crash
            replace(src, dst)  # type: ignore[arg-type]

        monkeypatch.setattr(bundle_io.os, "replace", crashing)
        try:
            add_to_bundle(bundle, files=files, stages=stages)
            finished = True
        except Crash:
            finished = False
        monkeypatch.setattr(bundle_io.os, "replace", replace)
        card = verify_bundle(bundle)  # consistent: every listed file is whole and its hash
        models = load_full_bundle(bundle, inference=CPU)  # and the daemon loads it
        assert models.bundle_id == card.bundle_id
        if finished:
            assert set(ONNX_FILES) <= set(card.files)
            break
        assert card.bundle_id == before.bundle_id or not set(ONNX_FILES) & set(card.files)
        crash_at += 1
    assert crash_at >= 4  # the card(s) and each of the three files were crashed around
    again = add_to_bundle(bundle, files=files, stages=stages)  # and a rerun completes
    assert set(ONNX_FILES) <= set(again.files)
