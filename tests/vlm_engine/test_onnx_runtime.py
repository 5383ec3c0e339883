"""The CLIP image tower on ONNX Runtime: export into the bundle, parity with torch, the runtime choice."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

from tests.vlm_engine.clip_helpers import tiny_bundle, tiny_exported_bundle, tiny_splits, window
from vlm_engine.bundle import add_to_bundle, load_bundle, read_card, verify_bundle
from vlm_engine.infer import (
    ClipBatch,
    InferenceConfig,
    InferenceEngine,
    RuntimeUnavailable,
    choose_engine,
    load_engine,
    onnx_export,
)
from vlm_engine.infer.engine import ChartEngine
from vlm_engine.infer.onnx_export import (
    FP32_FILE,
    INT8_FILE,
    PARITY_FILE,
    QUANT_PLANS,
    quantize_dynamic_int8,
    quantize_int8,
)
from vlm_engine.infer.onnx_runtime import OnnxEngine, session_options
from vlm_engine.infer.runtime_choice import (
    FP32_TOLERANCE,
    ParityCharts,
    fp32_problem,
    int8_problem,
    read_parity,
    research_runtime,
)

CONFIG = InferenceConfig(device="cpu", threads=1, warmup_batches=1, max_batch=8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_exported_bundle(tmp_path_factory.mktemp("onnx") / "bundle")


def copy_of(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def test_export_when_added_to_bundle_then_files_hashed_in_card_and_stage_recorded(exported: Path):
    card = verify_bundle(exported)  # every file, the ONNX ones included, matches its sha256
    assert {FP32_FILE, PARITY_FILE} <= set(card.files)
    stage = card.stages["onnx"]
    assert stage["opset"] >= 17
    if "int8" in stage["variants"]:  # static, calibrated on the training split
        assert INT8_FILE in card.files
        assert stage["quantization"] == "static"
        assert stage["int8_graph"] == onnx_export.FOLDED
        assert stage["calibration_charts"] == min(256, len(tiny_splits()["train"]))
    else:  # this one-epoch model's 15 test charts: one swapped rank moves the AUC by 0.04
        assert "INT8 direction AUC" in stage["refused"]["onnx-int8"]
    assert stage["parity_charts"] == len(read_parity(load_bundle(exported)).images) > 0


def test_fp32_when_scoring_charts_then_probabilities_within_tolerance_of_torch(exported: Path):
    bundle = load_bundle(exported)
    torch_engine = InferenceEngine(bundle=bundle, config=CONFIG)
    onnx_engine = OnnxEngine(bundle=bundle, config=CONFIG, variant="fp32")
    windows = [window(seed=i) for i in range(11)]  # more than max_batch: chunked over workers
    ref, got = torch_engine.score_batch(windows), onnx_engine.score_batch(windows)
    assert got.classes == ref.classes
    assert len(got) == 11
    assert np.abs(got.pattern_probs - ref.pattern_probs).max() <= FP32_TOLERANCE
    assert np.abs(got.p_up - ref.p_up).max() <= FP32_TOLERANCE
    assert np.allclose(got.embeddings, ref.embeddings, atol=1e-4)
    assert len(onnx_engine.score_batch([])) == 0


def test_auto_when_parity_holds_then_fastest_measured_runtime_serves_and_choice_logged(
    exported: Path,
):
    with capture_logs() as logs:
        engine, choice = choose_engine(load_bundle(exported), CONFIG)  # CONFIG.runtime is torch
        assert engine.runtime == "torch"
        assert choice.chosen == "torch"
        auto = InferenceConfig(device="cpu", threads=1, warmup_batches=1, runtime="auto")
        engine, choice = choose_engine(load_bundle(exported), auto)
    assert choice.parity["onnx_max_prob_gap"] <= FP32_TOLERANCE
    candidates = {"torch", "onnx"} | ({"onnx-int8"} - set(choice.refused))
    assert set(choice.ms_per_chart) == candidates
    assert choice.chosen == min(choice.ms_per_chart, key=choice.ms_per_chart.__getitem__)
    assert engine.runtime == choice.chosen
    chosen = [e for e in logs if e["event"] == "engine.runtime_chosen"]
    assert chosen[-1]["chosen"] == choice.chosen
    assert chosen[-1]["requested"] == "auto"


def test_onnx_when_bundle_has_no_export_then_refused_with_reason_and_torch_serves(
    exported: Path, tmp_path: Path
):
    plain = tmp_path / "plain"
    tiny_bundle(plain, seed=1)
    config = InferenceConfig(device="cpu", threads=1, warmup_batches=1, runtime="onnx-int8")
    with capture_logs() as logs:
        engine, choice = choose_engine(load_bundle(plain), config)
    assert isinstance(engine, InferenceEngine)
    assert choice.chosen == "torch"
    assert set(choice.refused) == {"onnx", "onnx-int8"}
    assert "no parity charts" in choice.refused["onnx"]
    refused = [e for e in logs if e["event"] == "engine.runtime_refused"]
    assert {e["runtime"] for e in refused} == {"onnx", "onnx-int8"}


def test_onnx_when_export_is_from_other_clip_weights_then_refused(exported: Path, tmp_path: Path):
    bundle = copy_of(exported, tmp_path)
    card_path = bundle / "model_card.json"
    card = json.loads(card_path.read_text())
    card["stages"]["onnx"]["clip"] = "0" * 16  # as if clip/ had been retrained after the export
    card_path.write_text(json.dumps(card))
    with pytest.raises(RuntimeUnavailable, match="other CLIP weights"):
        OnnxEngine(bundle=load_bundle(bundle), config=CONFIG, variant="fp32")
    engine, choice = choose_engine(
        load_bundle(bundle), InferenceConfig(device="cpu", warmup_batches=1, runtime="onnx")
    )
    assert engine.runtime == "torch"
    assert "other CLIP weights" in choice.refused["onnx"]


def _batch(probs: list[list[float]], p_up: list[float]) -> ClipBatch:
    return ClipBatch(
        bundle_id="b",
        classes=("none", "hammer"),
        pattern_probs=np.asarray(probs, dtype=np.float32),
        p_up=np.asarray(p_up, dtype=np.float32),
        embeddings=np.zeros((len(p_up), 2), dtype=np.float32),
    )


def test_fp32_problem_when_a_probability_differs_beyond_tolerance_then_reason():
    ref = _batch([[0.9, 0.1], [0.2, 0.8]], [0.6, 0.4])
    assert fp32_problem(ref, _batch([[0.9, 0.1], [0.2, 0.8]], [0.60005, 0.4]), {}) == ""
    parity: dict[str, float] = {}
    reason = fp32_problem(ref, _batch([[0.9, 0.1], [0.2, 0.8]], [0.6, 0.401]), parity)
    assert "differ from torch's" in reason
    assert parity["onnx_max_prob_gap"] == pytest.approx(0.001, abs=1e-6)


def test_int8_problem_when_accuracy_or_auc_drifts_then_reason():
    charts = ParityCharts(
        images=np.zeros((4, 2, 2, 3), dtype=np.uint8),
        patterns=np.array([0, 1, 1, -1]),
        direction=np.array([1, -1, 1, -1], dtype=np.int8),
    )
    fp32 = _batch([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.5, 0.5]], [0.7, 0.2, 0.6, 0.3])
    same = _batch([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4]], [0.71, 0.2, 0.6, 0.3])
    assert int8_problem(fp32, same, charts, {}) == ""
    wrong_pattern = _batch([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.5, 0.5]], [0.7, 0.2, 0.6, 0.3])
    assert "pattern accuracy" in int8_problem(fp32, wrong_pattern, charts, {})
    wrong_order = _batch([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.5, 0.5]], [0.7, 0.2, 0.25, 0.3])
    assert "direction AUC" in int8_problem(fp32, wrong_order, charts, {})


def test_session_options_when_built_then_one_thread_sequential_without_spinning():
    import onnxruntime as ort

    options = session_options(1)
    assert options.intra_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_load_engine_when_runtime_onnx_then_serves_on_onnx(exported: Path):
    config = InferenceConfig(device="cpu", threads=1, warmup_batches=1, runtime="onnx")
    engine = load_engine(exported, config=config)
    assert engine.runtime == "onnx"
    batch = engine.score_batch([window(seed=3)])
    assert len(batch) == 1
    assert batch.bundle_id == engine.bundle_id
    assert batch.render_seconds > 0


def test_timing_clock_when_on_cpu_then_process_cpu_time_not_wall_time():
    import time

    from vlm_engine.infer.runtime_choice import timing_clock

    assert timing_clock(InferenceConfig(device="cpu")) is time.process_time


def _alone_in_7_in_64(engine: OnnxEngine, images: np.ndarray) -> list[np.ndarray]:
    """Chart 3's embedding scored alone, in a batch of 7 and in a batch of 64."""
    batch = images[np.arange(64) % len(images)]
    return [
        engine.embed(batch[3:4])[0],
        engine.embed(batch[:7])[3],
        engine.embed(batch)[3],
        engine.score_images(batch).embeddings[3],  # chunked over the engine's workers
    ]


def test_int8_when_static_then_embedding_bit_identical_alone_and_in_batches_of_7_and_64(
    exported: Path,
):
    bundle = load_bundle(exported)
    fp32 = (exported / FP32_FILE).read_bytes()
    train, test = tiny_splits()["train"], tiny_splits()["test"]
    static = quantize_int8(fp32, train.images, QUANT_PLANS[0])
    engine = OnnxEngine(bundle=bundle, config=CONFIG, variant="int8", model=static)
    alone, *batched = _alone_in_7_in_64(engine, test.images)
    assert all(np.array_equal(alone, b) for b in batched)
    # the check can fail: dynamic INT8 scales a chart by its whole batch's range
    dynamic = quantize_dynamic_int8(fp32)
    engine = OnnxEngine(bundle=bundle, config=CONFIG, variant="int8", model=dynamic)
    alone, *batched = _alone_in_7_in_64(engine, test.images)
    assert not all(np.array_equal(alone, b) for b in batched)


def _bias_adds(model: bytes) -> tuple[int, int]:
    """(MatMulIntegerToFloat nodes with a bias input, Adds of a constant vector right after one
    of them: bias adds left apart; the residual adds take two activations)."""
    import onnx

    graph = onnx.load_from_string(model).graph
    integer = [n for n in graph.node if n.op_type == "MatMulIntegerToFloat"]
    with_bias = sum(1 for n in integer if len(n.input) > 6 and n.input[6])
    outs = {n.output[0] for n in integer}
    vectors = {t.name for t in graph.initializer if len(t.dims) == 1}
    adds = sum(
        1
        for n in graph.node
        if n.op_type == "Add" and outs & set(n.input) and vectors & set(n.input)
    )
    return with_bias, adds


def test_int8_when_quantized_then_bias_adds_folded_and_embeddings_bit_identical_to_unfolded(
    exported: Path, monkeypatch: pytest.MonkeyPatch
):
    bundle = load_bundle(exported)
    fp32 = (exported / FP32_FILE).read_bytes()
    train, test = tiny_splits()["train"], tiny_splits()["test"]
    folded = quantize_int8(fp32, train.images, QUANT_PLANS[0])
    with monkeypatch.context() as m:  # the QDQ graph as onnxruntime.quantization wrote it
        m.setattr(onnx_export, "fold_biases", lambda model: model)
        qdq = quantize_int8(fp32, train.images, QUANT_PLANS[0])
    with_bias, adds = _bias_adds(folded)
    assert with_bias > 0
    assert adds == 0
    plain = OnnxEngine(bundle=bundle, config=CONFIG, variant="int8", model=qdq)
    fast = OnnxEngine(bundle=bundle, config=CONFIG, variant="int8", model=folded)
    assert np.array_equal(plain.embed(test.images), fast.embed(test.images))
    # the check can fail: onnxruntime run on the QDQ graph keeps every bias add apart
    assert _bias_adds(onnx_export.fold_biases(qdq)) == (with_bias, 0)
    assert _bias_adds(_extended(qdq))[1] == with_bias


def _extended(model: bytes) -> bytes:
    """The graph after onnxruntime's extended optimizations alone (no folding)."""
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = f"{tmp}/out.onnx"
        ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        return Path(f"{tmp}/out.onnx").read_bytes()


def test_auto_when_int8_export_is_dynamic_then_refused_as_batch_dependent_and_logged(
    exported: Path, tmp_path: Path
):
    bundle = copy_of(exported, tmp_path)
    stage = {k: v for k, v in read_card(bundle).stages["onnx"].items() if k != "quantization"}
    stage["variants"] = ["fp32", "int8"]  # as a bundle exported before static INT8
    dynamic = quantize_dynamic_int8((bundle / FP32_FILE).read_bytes())
    add_to_bundle(bundle, files={INT8_FILE: dynamic}, stages={"onnx": stage})
    auto = InferenceConfig(device="cpu", threads=1, warmup_batches=1, runtime="auto")
    with capture_logs() as logs:
        engine, choice = choose_engine(load_bundle(bundle), auto)
    assert "dynamic INT8 (not static)" in choice.refused["onnx-int8"]
    assert "onnx-int8" not in choice.ms_per_chart
    assert engine.runtime in {"onnx", "torch"}
    refused = [e for e in logs if e["event"] == "engine.runtime_refused"]
    assert [e["runtime"] for e in refused] == ["onnx-int8"]
    by_name = InferenceConfig(device="cpu", threads=1, warmup_batches=1, runtime="onnx-int8")
    with capture_logs() as logs:
        engine, choice = choose_engine(load_bundle(bundle), by_name)
    assert engine.runtime == choice.chosen == "onnx-int8"  # asked for by name it serves, warned
    warned = [e for e in logs if e["event"] == "engine.runtime_batch_dependent"]
    assert "dynamic INT8" in warned[0]["reason"]


class _TorchFastestClock:
    """A clock on which torch scores 1000x faster than the other runtimes: it moves only while an
    engine scores (see _ticking), by the time that engine's runtime is given."""

    def __init__(self) -> None:
        self.calls = 0
        self.now = 0.0

    def __call__(self) -> float:
        self.calls += 1
        return self.now

    def scored(self, runtime: str) -> None:
        self.now += 0.001 if runtime == "torch" else 1.0


@contextlib.contextmanager
def _ticking(clock: _TorchFastestClock) -> Iterator[None]:
    """Every engine's score_images moves clock forward by its runtime's time."""
    original = ChartEngine.score_images

    def score_images(self: ChartEngine, images: Any) -> Any:
        out = original(self, images)
        clock.scored(self.runtime)
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ChartEngine, "score_images", score_images)
        yield


def test_research_runtime_when_a_timer_favours_torch_then_fixed_order_untimed_and_auto_still_times(
    exported: Path,
):
    card = read_card(exported)
    resolved = research_runtime("auto", card)
    assert resolved == ("onnx-int8" if INT8_FILE in card.files else "onnx")
    assert research_runtime("torch", card) == "torch"  # a runtime asked for by name stays
    research = InferenceConfig(
        device="cpu", threads=1, warmup_batches=1, runtime="auto", auto_rule="fixed-order"
    )
    clock = _TorchFastestClock()
    with capture_logs() as logs:
        engine, choice = choose_engine(load_bundle(exported), research, clock=clock)
    assert clock.calls == 0  # never timed
    assert choice.chosen == engine.runtime == resolved  # the fixed order, from the loaded card
    assert (choice.requested, choice.ms_per_chart) == ("auto", {})
    assert [e["resolved"] for e in logs if e["event"] == "engine.runtime_resolved"] == [resolved]
    auto = InferenceConfig(device="cpu", threads=1, warmup_batches=1, runtime="auto")
    clock = _TorchFastestClock()
    with _ticking(clock):
        engine, choice = choose_engine(load_bundle(exported), auto, clock=clock)
    assert choice.chosen == engine.runtime == "torch"  # the daemon's auto times, on the clock given
    assert len(choice.ms_per_chart) >= 2


def test_research_runtime_when_bundle_carries_no_export_or_dynamic_int8_then_next_in_order(
    exported: Path, tmp_path: Path
):
    plain = tmp_path / "plain"
    tiny_bundle(plain, seed=1)
    assert research_runtime("auto", read_card(plain)) == "torch"
    bundle = copy_of(exported, tmp_path)
    stage = {k: v for k, v in read_card(bundle).stages["onnx"].items() if k != "quantization"}
    dynamic = quantize_dynamic_int8((bundle / FP32_FILE).read_bytes())
    add_to_bundle(bundle, files={INT8_FILE: dynamic}, stages={"onnx": stage})
    assert research_runtime("auto", read_card(bundle)) == "onnx"  # batch-dependent INT8 skipped
