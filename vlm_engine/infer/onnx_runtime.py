"""The CLIP image tower on ONNX Runtime: the bundle's fp32 or INT8 export behind ChartEngine.

Sessions are set up for a busy 2-core box: one intra-op thread per session call and a batch
split over the engine's workers (as the torch engine does), sequential execution and no
spin-waiting, so an idle worker gives its core back at once. The CUDA execution provider is used
when the device allows it and onnxruntime has it; otherwise the CPU one.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import structlog

from vlm_engine.bundle import Bundle
from vlm_engine.infer.engine import (
    MAX_AUTO_WORKERS,
    ChartEngine,
    Float32Array,
    InferenceConfig,
    resolve_device,
)
from vlm_engine.infer.errors import RuntimeUnavailable
from vlm_engine.infer.onnx_export import FP32_FILE, INPUT, INT8_FILE, OUTPUT, STAGE, clip_digest

log = structlog.get_logger("vlm_engine.infer")

Variant = Literal["fp32", "int8"]
FILES: dict[Variant, str] = {"fp32": FP32_FILE, "int8": INT8_FILE}


def export_problem(bundle: Bundle, variant: Variant) -> str:
    """Why the bundle's export of `variant` cannot serve ("" when it can)."""
    name = FILES[variant]
    stage = bundle.card.stages.get(STAGE)
    if isinstance(stage, dict) and variant not in stage.get("variants", FILES):
        # an export that left this variant out (stages before "variants" wrote both)
        why = stage.get("refused", {}).get(f"onnx-{variant}", "not exported")
        return f"the bundle's ONNX export has no {variant} tower ({why})"
    if name not in bundle.card.files or not isinstance(stage, dict):
        return (
            f"the bundle has no ONNX export ({name}); add one with `vlmtrader model export-onnx "
            f"{bundle.path}`, or rebuild it with `vlmtrader model build` or `vlmtrader model bootstrap`"
        )
    if stage.get("clip") != clip_digest(bundle.card.files):
        return f"{name} was exported from other CLIP weights than the bundle's clip/; rerun `vlmtrader model export-onnx {bundle.path}`"
    return ""


def session_options(threads: int) -> Any:
    """One session's options: `threads` intra-op threads, sequential, no spin-waiting."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # warnings about unused initializers etc. are not ours to act on
    return options


def providers(config: InferenceConfig) -> list[str]:
    """CUDA when the device allows it and onnxruntime was built with it, else the CPU provider."""
    import onnxruntime as ort

    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if cuda and config.device != "cpu" and resolve_device(config.device).type == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxEngine(ChartEngine):
    """A bundle's exported image tower on ONNX Runtime; render + score in one call, as InferenceEngine."""

    def __init__(
        self,
        *,
        bundle: Bundle,
        config: InferenceConfig,
        variant: Variant,
        model: bytes | None = None,
    ) -> None:
        """model: the ONNX bytes to serve instead of the bundle's file (an export being checked
        before it is written)."""
        import onnxruntime as ort

        problem = "" if model is not None else export_problem(bundle, variant)
        if problem:
            raise RuntimeUnavailable(problem)
        self.runtime = "onnx" if variant == "fp32" else "onnx-int8"
        self.variant = variant
        threads = config.threads or 1
        self.providers = providers(config)
        on_cpu = self.providers[0] == "CPUExecutionProvider"
        workers = 1
        if on_cpu:
            workers = config.workers or (
                min(MAX_AUTO_WORKERS, os.cpu_count() or 1) if threads == 1 else 1
            )
        self._setup(bundle=bundle, config=config, workers=workers)
        try:
            self.session = ort.InferenceSession(
                model if model is not None else (bundle.path / FILES[variant]).read_bytes(),
                sess_options=session_options(threads),
                providers=self.providers,
            )
        except (
            OSError,
            RuntimeError,
            ValueError,
        ) as e:  # ORT's Fail/InvalidGraph are RuntimeErrors
            msg = f"{bundle.path / FILES[variant]}: onnxruntime cannot load it ({' '.join(str(e).split())})"
            raise RuntimeUnavailable(msg) from None
        self.warm_up()

    def _describe(self) -> dict[str, str]:
        return {"provider": self.providers[0], "variant": self.variant}

    def embed(self, images: npt.NDArray[np.uint8]) -> Float32Array:
        """Unit image embeddings (N, D) of uint8 charts of the bundle's spec."""
        out = self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(images)})[0]
        return np.asarray(out, dtype=np.float32)
