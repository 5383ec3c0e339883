"""A bundle's image tower exported to ONNX, written only where its parity holds on the bundle's test split.

fp32 is written when every pattern probability and p_up it gives is within FP32_TOLERANCE of
torch's; INT8 when its pattern accuracy is within INT8_ACCURACY and its direction AUC within
INT8_AUC of fp32's (runtime_choice's checks: here on the whole test split, at load on the
parity sample stored with the export). INT8 is static, calibrated on the training split (never
the test split it is judged on); the first of QUANT_PLANS whose parity holds is written. A
refused fp32 writes nothing (ExportRefused); a refused INT8 is left out and the card's stage says
why. Files and card go in through add_to_bundle, so
a crash at any point leaves the bundle as it was or as it is afterwards, loadable either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import structlog

from vlm_engine.bundle import Bundle, ModelCard, add_to_bundle, load_bundle
from vlm_engine.calibrate.evaluate import pattern_labels
from vlm_engine.clip.data import ClipSamples
from vlm_engine.infer.engine import ClipBatch, InferenceConfig, InferenceEngine
from vlm_engine.infer.errors import ExportRefused
from vlm_engine.infer.onnx_export import (
    CALIBRATION_CHARTS,
    FOLDED,
    FP32_FILE,
    INT8_FILE,
    OPSET,
    PARITY_CHARTS,
    PARITY_FILE,
    QUANT_PLANS,
    STAGE,
    STATIC,
    clip_digest,
    export_fp32,
    parity_npz,
    quantize_int8,
)
from vlm_engine.infer.onnx_runtime import OnnxEngine
from vlm_engine.infer.runtime_choice import ParityCharts, fp32_problem, int8_problem

log = structlog.get_logger("vlm_engine.infer")

# What export_to_bundle reports through `step` as it goes (a progress bar's labels).
STEPS = ("export fp32", "torch scores", "fp32 parity", "INT8: calibrate, quantize, parity", "write")
# Where the parity scores run: the CPU, torch's own thread count (a build has set it), one worker.
PARITY_CONFIG = InferenceConfig(device="cpu", warmup_batches=1)


class OnnxExport(msgspec.Struct, frozen=True, kw_only=True):
    """What an export wrote: the bundle's new card, the runtimes it can serve, the parity figures
    on the test split, and each runtime left out with the reason."""

    card: ModelCard
    runtimes: tuple[str, ...]
    parity: dict[str, float | None]
    refused: dict[str, str] = msgspec.field(default_factory=dict)
    test_charts: int = 0


def _finite(value: float) -> float | None:
    """A figure for the card (JSON has no NaN: a figure the charts cannot measure is null)."""
    return round(float(value), 6) if math.isfinite(value) else None


def export_to_bundle(
    directory: Path,
    *,
    train: ClipSamples,
    test: ClipSamples,
    int8: bool = True,
    step: Callable[[str], None] | None = None,
) -> OnnxExport:
    """Export the bundle's image tower (fp32, and INT8 calibrated on `train` unless int8 is False),
    check parity on the `test` split, and add what passed to the bundle with parity charts sampled
    from that split. ExportRefused (nothing written) when fp32 is not within tolerance of torch."""
    done = step or (lambda _name: None)
    bundle = load_bundle(directory)
    charts = ParityCharts(
        images=test.images,
        patterns=pattern_labels(bundle.prompts, test),
        direction=np.asarray(test.direction, dtype=np.int8),
    )
    fp32 = export_fp32(bundle.parts, bundle.spec)  # before the torch engine folds the model
    done(STEPS[0])
    reference = InferenceEngine(bundle=bundle, config=PARITY_CONFIG).score_images(charts.images)
    done(STEPS[1])
    parity: dict[str, float] = {}
    engine = OnnxEngine(bundle=bundle, config=PARITY_CONFIG, variant="fp32", model=fp32)
    fp32_scores = engine.score_images(charts.images)
    problem = fp32_problem(reference, fp32_scores, parity)
    done(STEPS[2])
    if problem:
        log.warning("onnx.refused", path=str(directory), runtime="onnx", reason=problem)
        msg = f"{directory}: ONNX export not written: {problem} on {len(test)} test charts"
        raise ExportRefused(msg)
    files = {
        FP32_FILE: fp32,
        PARITY_FILE: parity_npz(charts.images, charts.patterns, charts.direction),
    }
    refused: dict[str, str] = {}
    plan = ""
    if int8:
        quantized = _static_int8(bundle, fp32, fp32_scores, train, charts, parity)
        done(STEPS[3])
        if isinstance(quantized, str):
            refused["onnx-int8"] = f"{quantized} on {len(test)} test charts"
            log.warning("onnx.refused", path=str(directory), runtime="onnx-int8", reason=quantized)
        else:
            files[INT8_FILE], plan = quantized
    else:
        refused["onnx-int8"] = "not asked for (exported without INT8)"
    variants = ["fp32"] + (["int8"] if INT8_FILE in files else [])
    figures = {k: _finite(v) for k, v in parity.items()}
    import onnxruntime

    stage = {
        "clip": clip_digest(bundle.card.files),
        "opset": OPSET,
        "variants": variants,
        **(
            {
                "quantization": STATIC,
                "int8": f"static QDQ, per-channel weights: {plan}",
                "int8_graph": FOLDED,
                "calibration_charts": min(len(train), CALIBRATION_CHARTS),
            }
            if INT8_FILE in files
            else {}
        ),
        "parity_charts": int(min(len(test), PARITY_CHARTS)),
        "test_charts": len(test),
        "parity": figures,
        "refused": refused,
        "onnxruntime": onnxruntime.__version__,
    }
    card = add_to_bundle(directory, files=files, stages={STAGE: stage})
    done(STEPS[4])
    runtimes = tuple("onnx" if v == "fp32" else "onnx-int8" for v in variants)
    log.info(
        "onnx.exported",
        bundle_id=card.bundle_id,
        runtimes=list(runtimes),
        test_charts=len(test),
        refused=refused,
        **{k: v for k, v in figures.items()},
    )
    return OnnxExport(
        card=card, runtimes=runtimes, parity=figures, refused=refused, test_charts=len(test)
    )


def _static_int8(
    bundle: Bundle,
    fp32: bytes,
    fp32_scores: ClipBatch,
    train: ClipSamples,
    charts: ParityCharts,
    parity: dict[str, float],
) -> tuple[bytes, str] | str:
    """The first of QUANT_PLANS whose INT8 passes parity on `charts` (calibrated on `train`) with
    its plan's name, else the last plan's problem."""
    problem = "no training charts to calibrate INT8 on"
    for plan in QUANT_PLANS if len(train) else ():
        model = quantize_int8(fp32, train.images, plan)
        engine = OnnxEngine(bundle=bundle, config=PARITY_CONFIG, variant="int8", model=model)
        problem = int8_problem(fp32_scores, engine.score_images(charts.images), charts, parity)
        log.info("onnx.int8_tried", bundle_id=bundle.bundle_id, plan=plan.name, problem=problem)
        if not problem:
            return model, plan.name
    return problem
