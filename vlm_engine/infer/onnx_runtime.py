"""The CLIP image tower on ONNX Runtime: the bundle's fp32 or INT8 export behind ChartEngine.

Sessions are set up for a busy 2-core box: one intra-op thread per session call and a batch
split over the engine's workers (as the torch engine does), sequential execution and no
spin-waiting, so an idle worker gives its core back at once. The CUDA execution provider is used
when the device allows it and onnxruntime has it; otherwise the CPU one. The tower is served cut
to the class token in its last layer (onnx_prune) when its embeddings are the whole graph's to
the bit on the bundle's parity charts (boot9: static INT8 and fp32 both), else whole. boot9 (80 px, static INT8), MLScorer.score_deferred on 2
workers, whole and cut alternating in one process (bench_ml_arms' run_arms, 300 rounds, load
4.5, signals identical): 100 symbols p50 10.54 -> 8.55 ms (0.811), process CPU 9.93 -> 7.99
(0.804); 10 symbols p50 1.82 -> 1.63 (0.896). bench_ml_pipeline --levers wholetower: signal
digests identical at 10 and 100 symbols (201 batches each); paced order p50 at 100 symbols
whole/cut 1.17-1.23 over 3 runs at load 4.9-6.7.
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
from vlm_engine.infer.errors import PruneRefused, RuntimeUnavailable
from vlm_engine.infer.onnx_export import (
    FP32_FILE,
    INPUT,
    INT8_FILE,
    OUTPUT,
    PARITY_FILE,
    STAGE,
    clip_digest,
)
from vlm_engine.infer.onnx_prune import class_token_only

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


# Serve the tower cut to the class token in its last layer when it is bit-identical (onnx_prune);
# False: the whole graph, as before (benches compare the two in one run).
PRUNE = True
PRUNE_NOISE_CHARTS = 64


def prune_check_charts(bundle: Bundle) -> npt.NDArray[np.uint8]:
    """Charts the cut tower must score as the whole one: the bundle's parity charts (when it has
    them) and PRUNE_NOISE_CHARTS of seeded uniform noise."""
    spec = bundle.spec
    noise = np.random.default_rng(0).integers(
        0, 256, (PRUNE_NOISE_CHARTS, spec.height, spec.width, 3), dtype=np.uint8
    )
    if PARITY_FILE not in bundle.card.files:
        return noise
    try:
        with np.load(bundle.path / PARITY_FILE) as parity:
            images = np.asarray(parity["images"], dtype=np.uint8)
    except (OSError, KeyError, ValueError):
        return noise
    if images.shape[1:] != noise.shape[1:]:
        return noise
    return np.ascontiguousarray(np.concatenate([images, noise]))


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
        path = bundle.path / FILES[variant]
        raw = model if model is not None else path.read_bytes()
        try:
            self.session = ort.InferenceSession(
                raw, sess_options=session_options(threads), providers=self.providers
            )
        except (
            OSError,
            RuntimeError,
            ValueError,
        ) as e:  # ORT's Fail/InvalidGraph are RuntimeErrors
            msg = f"{path}: onnxruntime cannot load it ({' '.join(str(e).split())})"
            raise RuntimeUnavailable(msg) from None
        self.class_token_only = False
        if PRUNE:
            self._prune(raw, threads)
        self.warm_up()

    def _prune(self, model: bytes, threads: int) -> None:
        """Serve the tower cut to the class token in its last layer (onnx_prune) when its
        embeddings are the whole graph's, bit for bit, on the bundle's parity charts and a
        seeded batch of noise; otherwise keep the whole graph (logged either way)."""
        import onnxruntime as ort

        try:
            pruned = class_token_only(model)
            session = ort.InferenceSession(
                pruned, sess_options=session_options(threads), providers=self.providers
            )
        except (PruneRefused, ImportError, RuntimeError, ValueError) as e:  # serve it whole
            log.info("engine.prune_refused", variant=self.variant, reason=" ".join(str(e).split()))
            return
        charts = prune_check_charts(self.bundle)
        whole = self.session.run([OUTPUT], {INPUT: charts})[0]
        cut = session.run([OUTPUT], {INPUT: charts})[0]
        if not np.array_equal(whole, cut):
            log.info(
                "engine.prune_refused",
                variant=self.variant,
                reason="embeddings differ from the whole graph's",
                max_difference=float(np.max(np.abs(whole - cut))),
            )
            return
        self.session = session
        self.class_token_only = True
        log.info("engine.pruned", variant=self.variant, charts=len(charts))

    def _describe(self) -> dict[str, str]:
        return {
            "provider": self.providers[0],
            "variant": self.variant,
            "last_layer": "class token" if self.class_token_only else "every token",
        }

    def embed(self, images: npt.NDArray[np.uint8]) -> Float32Array:
        """Unit image embeddings (N, D) of uint8 charts of the bundle's spec."""
        out = self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(images)})[0]
        return np.asarray(out, dtype=np.float32)
