"""Which runtime serves a bundle: torch, its ONNX export (fp32) or the INT8 one, by parity and speed at load.

Parity is measured on the bundle's parity charts (a sample of its test split, onnx/parity.npz):
fp32 serves when every pattern probability and p_up is within FP32_TOLERANCE of torch's; INT8
when its pattern accuracy is within INT8_ACCURACY and its direction AUC within INT8_AUC of
fp32's on the same charts. A runtime that fails is refused with the reason (logged) and the
request falls back: onnx-int8 -> onnx -> torch. auto times every runtime whose parity holds on
one batch (CPU time on the CPU, see timing_clock) and serves the fastest. auto never considers
an INT8 export that is not static (bundles exported before static INT8 carry dynamic INT8,
whose scores depend on a chart's batch-mates): it is refused with the reason, and
`vlmtrader model export-onnx BUNDLE` rewrites it; asked for by name (onnx-int8) it still serves,
with a warning (engine.runtime_batch_dependent).

Timing makes auto depend on the machine (and its load), so research runs (backtest, evaluate)
load with auto_rule "fixed-order": auto resolves by research_runtime instead, a fixed order,
FIXED_ORDER, over the variants the bundle's card carries, never timed, then the usual parity
fallback; two machines score alike.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt
import structlog

from vlm_engine.bundle import Bundle, ModelCard, load_bundle
from vlm_engine.calibrate.metrics import accuracy
from vlm_engine.infer.engine import (
    ChartEngine,
    ClipBatch,
    InferenceConfig,
    InferenceEngine,
    RuntimeName,
    resolve_device,
)
from vlm_engine.infer.errors import RuntimeUnavailable
from vlm_engine.infer.onnx_export import DYNAMIC, FP32_FILE, INT8_FILE, PARITY_FILE, STAGE, STATIC
from vlm_engine.infer.onnx_runtime import OnnxEngine
from vlm_engine.metrics import auc

log = structlog.get_logger("vlm_engine.infer")

FP32_TOLERANCE = 1e-4
INT8_ACCURACY = 0.005
INT8_AUC = 0.002
TIMING_REPEATS = 9
FALLBACK = {"onnx-int8": ("onnx-int8", "onnx", "torch"), "onnx": ("onnx", "torch")}
# research auto: the most compact variant first; requesting one falls back along FALLBACK by parity
FIXED_ORDER: tuple[RuntimeName, ...] = ("onnx-int8", "onnx", "torch")


class ParityCharts(msgspec.Struct, frozen=True, kw_only=True, eq=False):
    """Test charts with their pattern class (-1: none) and direction (-1, 0, 1)."""

    images: npt.NDArray[np.uint8]
    patterns: npt.NDArray[np.int64]
    direction: npt.NDArray[np.int8]


class RuntimeChoice(msgspec.Struct, frozen=True, kw_only=True):
    """What was asked, what serves, each candidate's ms per chart and parity figures, the refusals."""

    requested: str
    chosen: str
    ms_per_chart: dict[str, float] = msgspec.field(default_factory=dict)
    parity: dict[str, float] = msgspec.field(default_factory=dict)
    refused: dict[str, str] = msgspec.field(default_factory=dict)


def read_parity(bundle: Bundle) -> ParityCharts:
    """The bundle's parity charts (RuntimeUnavailable when it has none or they are unreadable)."""
    if PARITY_FILE not in bundle.card.files:
        msg = f"the bundle has no parity charts ({PARITY_FILE}); add them with `vlmtrader model export-onnx {bundle.path}`"
        raise RuntimeUnavailable(msg)
    try:
        with np.load(io.BytesIO((bundle.path / PARITY_FILE).read_bytes())) as data:
            charts = ParityCharts(
                images=np.asarray(data["images"], dtype=np.uint8),
                patterns=np.asarray(data["patterns"], dtype=np.int64),
                direction=np.asarray(data["direction"], dtype=np.int8),
            )
    except (OSError, KeyError, ValueError) as e:
        msg = f"{bundle.path / PARITY_FILE}: unreadable parity charts ({e})"
        raise RuntimeUnavailable(msg) from None
    spec = bundle.spec
    if charts.images.ndim != 4 or charts.images.shape[1:] != (spec.height, spec.width, 3):
        msg = f"{bundle.path / PARITY_FILE}: charts of shape {charts.images.shape[1:]}, the spec draws {spec.height}x{spec.width}"
        raise RuntimeUnavailable(msg)
    return charts


def int8_quantization(bundle: Bundle) -> str:
    """How the bundle's INT8 export was quantized: static or dynamic (an export whose stage does
    not say is from before static INT8: dynamic)."""
    return int8_quantization_of(bundle.card)


def int8_quantization_of(card: ModelCard) -> str:
    """int8_quantization from the model card alone."""
    stage = card.stages.get(STAGE)
    mode = stage.get("quantization", DYNAMIC) if isinstance(stage, dict) else DYNAMIC
    return str(mode)


def batch_dependent_problem(bundle: Bundle) -> str:
    """Why auto may not pick the bundle's INT8 export ("" when it is static: batch-independent)."""
    mode = int8_quantization(bundle)
    if mode == STATIC:
        return ""
    return (
        f"the bundle's INT8 export is {mode} INT8 (not static): a chart's score depends on its "
        f"batch-mates, so auto does not serve it; rewrite it with `vlmtrader model export-onnx {bundle.path}`"
    )


def figures(batch: ClipBatch, charts: ParityCharts) -> tuple[float, float]:
    """(pattern accuracy on labelled charts, direction AUC on moving charts; NaN with one class)."""
    keep = charts.patterns >= 0
    acc = (
        accuracy(batch.pattern_probs[keep].astype(np.float64), charts.patterns[keep])
        if keep.any()
        else float("nan")
    )
    moving = charts.direction != 0
    auc_value = auc(charts.direction[moving] > 0, batch.p_up[moving].astype(np.float64))
    return acc, auc_value


def _gap(a: float, b: float) -> float:
    """|a - b|, 0 when both are NaN (a figure the charts cannot measure), inf when one is."""
    if np.isnan(a) and np.isnan(b):
        return 0.0
    return float(abs(a - b)) if not (np.isnan(a) or np.isnan(b)) else float("inf")


def fp32_problem(torch_batch: ClipBatch, fp32: ClipBatch, parity: dict[str, float]) -> str:
    """Why fp32 may not serve ("" when its probabilities are within FP32_TOLERANCE of torch's)."""
    gap = max(
        float(np.abs(fp32.pattern_probs - torch_batch.pattern_probs).max(initial=0.0)),
        float(np.abs(fp32.p_up - torch_batch.p_up).max(initial=0.0)),
    )
    parity["onnx_max_prob_gap"] = gap
    if gap > FP32_TOLERANCE:
        return f"fp32 probabilities differ from torch's by up to {gap:.2e} (> {FP32_TOLERANCE:.0e})"
    return ""


def int8_problem(
    fp32: ClipBatch, int8: ClipBatch, charts: ParityCharts, parity: dict[str, float]
) -> str:
    """Why INT8 may not serve ("" when accuracy and AUC are within tolerance of fp32's)."""
    acc_f, auc_f = figures(fp32, charts)
    acc_i, auc_i = figures(int8, charts)
    parity.update(
        fp32_pattern_accuracy=acc_f,
        int8_pattern_accuracy=acc_i,
        fp32_direction_auc=auc_f,
        int8_direction_auc=auc_i,
    )
    if _gap(acc_i, acc_f) > INT8_ACCURACY:
        return f"INT8 pattern accuracy {acc_i:.4f} vs fp32 {acc_f:.4f} (more than {INT8_ACCURACY} apart)"
    if _gap(auc_i, auc_f) > INT8_AUC:
        return f"INT8 direction AUC {auc_i:.4f} vs fp32 {auc_f:.4f} (more than {INT8_AUC} apart)"
    return ""


def ms_per_chart(
    engines: Mapping[str, ChartEngine],
    images: npt.NDArray[np.uint8],
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Each engine's median time of scoring `images` on `clock` over TIMING_REPEATS rounds, per
    chart (after one warm run each). A round runs every engine once, in turn, the order reversed
    every other round, so load that comes and goes weighs on all of them alike: timed one engine
    after the other, a burst of load on a busy machine once made the slower runtime win (onnx
    over onnx-int8, 0.10 against 0.07 ms per chart when quiet: in 1 of 20 loads at load 4.5)."""
    for engine in engines.values():
        engine.score_images(images)
    runs: dict[str, list[float]] = {name: [] for name in engines}
    order = list(engines.items())
    for round_ in range(TIMING_REPEATS):
        for name, engine in order if round_ % 2 == 0 else reversed(order):
            started = clock()
            engine.score_images(images)
            runs[name].append(clock() - started)
    return {name: float(np.median(r)) * 1000 / len(images) for name, r in runs.items()}


def timing_clock(config: InferenceConfig) -> Callable[[], float]:
    """The process's CPU time on the CPU: what a chart costs the cores, which other work on a busy
    machine does not inflate the way it does wall time (measured at load 16-21: wall figures of one
    runtime 30% apart from run to run); wall time on CUDA, where the device does the work."""
    return time.process_time if resolve_device(config.device).type == "cpu" else time.perf_counter


def _fp32(
    bundle: Bundle,
    config: InferenceConfig,
    reference: ClipBatch,
    charts: ParityCharts,
    parity: dict[str, float],
) -> tuple[OnnxEngine, ClipBatch]:
    """The fp32 engine and its scores of the parity charts (RuntimeUnavailable when refused)."""
    engine = OnnxEngine(bundle=bundle, config=config, variant="fp32")
    scores = engine.score_images(charts.images)
    problem = fp32_problem(reference, scores, parity)
    if problem:
        raise RuntimeUnavailable(problem)
    return engine, scores


def _int8(
    bundle: Bundle,
    config: InferenceConfig,
    fp32: ClipBatch,
    charts: ParityCharts,
    parity: dict[str, float],
    *,
    auto: bool,
) -> OnnxEngine:
    """The INT8 engine (RuntimeUnavailable when refused; for auto also when not static)."""
    if auto and (problem := batch_dependent_problem(bundle)):
        raise RuntimeUnavailable(problem)
    engine = OnnxEngine(bundle=bundle, config=config, variant="int8")
    problem = int8_problem(fp32, engine.score_images(charts.images), charts, parity)
    if problem:
        raise RuntimeUnavailable(problem)
    return engine


def _candidates(
    bundle: Bundle,
    config: InferenceConfig,
    torch_engine: InferenceEngine,
    wanted: tuple[str, ...],
    *,
    auto: bool,
) -> tuple[dict[str, ChartEngine], dict[str, str], dict[str, float], ParityCharts | None]:
    """The engines whose parity holds (torch always), the refusals, the parity figures, the charts."""
    engines: dict[str, ChartEngine] = {"torch": torch_engine}
    parity: dict[str, float] = {}
    try:
        charts = read_parity(bundle)
        fp32, fp32_scores = _fp32(
            bundle, config, torch_engine.score_images(charts.images), charts, parity
        )
    except RuntimeUnavailable as e:
        return engines, dict.fromkeys(wanted, str(e)), parity, None
    engines["onnx"] = fp32
    refused: dict[str, str] = {}
    if "onnx-int8" in wanted:
        try:
            engines["onnx-int8"] = _int8(bundle, config, fp32_scores, charts, parity, auto=auto)
        except RuntimeUnavailable as e:
            refused["onnx-int8"] = str(e)
    return engines, refused, parity, charts


def research_runtime(requested: RuntimeName, card: ModelCard) -> RuntimeName:
    """What a research run asks for: auto as the first of FIXED_ORDER the bundle carries (its INT8
    only when static), untimed; any other runtime as asked. Parity still decides at load."""
    if requested != "auto":
        return requested
    carried = {
        "onnx-int8": INT8_FILE in card.files and int8_quantization_of(card) == STATIC,
        "onnx": FP32_FILE in card.files,
        "torch": True,
    }
    return next(name for name in FIXED_ORDER if carried[name])


def _asked(bundle: Bundle, config: InferenceConfig) -> RuntimeName:
    """The runtime choose_engine serves by parity: config.runtime, or for auto under auto_rule
    "fixed-order" the first of FIXED_ORDER the bundle carries (logged as resolved)."""
    if config.runtime != "auto" or config.auto_rule == "timed":
        return config.runtime
    resolved = research_runtime("auto", bundle.card)
    log.info("engine.runtime_resolved", bundle_id=bundle.bundle_id, requested="auto",
             resolved=resolved, rule="fixed order, untimed")  # fmt: skip
    return resolved


def choose_engine(
    bundle: Bundle, config: InferenceConfig, *, clock: Callable[[], float] | None = None
) -> tuple[ChartEngine, RuntimeChoice]:
    """The engine config.runtime asks for when its parity holds, else the fallback (see module doc).

    clock: what auto times on (default timing_clock(config)); tests inject one. With auto_rule
    "fixed-order", auto is research_runtime of the card the bundle was loaded with, never timed."""
    requested = config.runtime
    asked = _asked(bundle, config)
    torch_engine = InferenceEngine(bundle=bundle, config=config)
    if asked == "torch":
        return torch_engine, RuntimeChoice(requested=requested, chosen="torch")
    wanted = ("onnx", "onnx-int8") if asked == "auto" else FALLBACK[asked][:-1]
    engines, refused, parity, charts = _candidates(
        bundle, config, torch_engine, wanted, auto=asked == "auto"
    )
    for runtime, reason in refused.items():
        log.warning(
            "engine.runtime_refused", bundle_id=bundle.bundle_id, runtime=runtime, reason=reason
        )
    timings: dict[str, float] = {}
    if asked == "auto" and len(engines) > 1 and charts is not None:
        batch = _timing_batch(charts.images, config.max_batch)
        clock = clock or timing_clock(config)
        timings = {k: round(v, 4) for k, v in ms_per_chart(engines, batch, clock).items()}
        chosen = min(timings, key=timings.__getitem__)
    else:
        chosen = next(name for name in FALLBACK.get(asked, ("torch",)) if name in engines)
    choice = RuntimeChoice(
        requested=requested,
        chosen=chosen,
        ms_per_chart=timings,
        parity={k: round(v, 6) for k, v in parity.items()},
        refused=refused,
    )
    log.info("engine.runtime_chosen", bundle_id=bundle.bundle_id, **msgspec.to_builtins(choice))
    if chosen == "onnx-int8" and (problem := batch_dependent_problem(bundle)):
        log.warning("engine.runtime_batch_dependent", bundle_id=bundle.bundle_id, reason=problem)
    return engines[chosen], choice


def _timing_batch(images: npt.NDArray[np.uint8], max_batch: int) -> npt.NDArray[np.uint8]:
    """A batch of min(64, max_batch) parity charts (repeated when there are fewer)."""
    size = min(64, max_batch)
    return images[np.arange(size) % len(images)]


def load_engine(
    path: Path, *, config: InferenceConfig | None = None, spec_hash: str | None = None
) -> ChartEngine:
    """Load and validate a bundle (BundleError when unusable) and serve it on the runtime config asks for."""
    engine, _ = choose_engine(load_bundle(path, spec_hash=spec_hash), config or InferenceConfig())
    return engine
