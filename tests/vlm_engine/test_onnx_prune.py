"""The tower cut to its class token in the last layer (onnx_prune): the same embeddings, bit for
bit, from less work; refused (and the whole graph served) when the graph or the bits differ."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from tests.vlm_engine.clip_helpers import tiny_exported_bundle, tiny_splits
from vlm_engine.bundle import load_bundle
from vlm_engine.infer import InferenceConfig
from vlm_engine.infer import onnx_runtime as onnx_runtime_module
from vlm_engine.infer.errors import PruneRefused
from vlm_engine.infer.onnx_export import FP32_FILE, INPUT, QUANT_PLANS, quantize_int8
from vlm_engine.infer.onnx_prune import KEPT_TOKENS, class_token_only
from vlm_engine.infer.onnx_runtime import OnnxEngine, session_options

CONFIG = InferenceConfig(device="cpu", threads=1, warmup_batches=1, max_batch=8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_exported_bundle(tmp_path_factory.mktemp("onnx_prune") / "bundle")


@pytest.fixture(scope="module")
def static_int8(exported: Path) -> bytes:
    """The tiny bundle's tower in static INT8 (its own export refuses INT8 on parity)."""
    fp32 = (exported / FP32_FILE).read_bytes()
    return quantize_int8(fp32, tiny_splits()["train"].images, QUANT_PLANS[0])


def _softmax_shapes(model: bytes, images: np.ndarray) -> list[tuple[int, ...]]:
    """The output shape of every Softmax of the model on these charts, in graph order."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    proto = onnx.load_from_string(model)
    names = [n.output[0] for n in proto.graph.node if n.op_type == "Softmax"]
    proto.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    session = ort.InferenceSession(
        proto.SerializeToString(),
        sess_options=session_options(1),
        providers=["CPUExecutionProvider"],
    )
    return [tuple(o.shape) for o in session.run(names, {INPUT: images})]


def test_class_token_only_when_static_int8_then_last_layer_attends_for_one_token(
    static_int8: bytes,
) -> None:
    whole = static_int8
    images = tiny_splits()["test"].images[:2]
    before, after = _softmax_shapes(whole, images), _softmax_shapes(class_token_only(whole), images)
    assert len(before) == len(after) >= 1
    assert after[:-1] == before[:-1]  # the layers before the last are untouched
    *lead, tokens, keys = before[-1]
    assert tokens == keys > KEPT_TOKENS
    assert after[-1] == (*lead, KEPT_TOKENS, keys)  # the class token's row (and one) over every key


@pytest.mark.parametrize("prune", [False, True], ids=["whole", "class_token"])
def test_engine_when_the_cut_tower_matches_then_it_serves_and_embeddings_bit_identical(
    exported: Path, static_int8: bytes, monkeypatch: pytest.MonkeyPatch, prune: bool
) -> None:
    bundle = load_bundle(exported)
    monkeypatch.setattr(onnx_runtime_module, "PRUNE", False)
    whole = OnnxEngine(bundle=bundle, config=CONFIG, variant="int8", model=static_int8)
    monkeypatch.setattr(onnx_runtime_module, "PRUNE", prune)
    with capture_logs() as logs:
        engine = OnnxEngine(bundle=bundle, config=CONFIG, variant="int8", model=static_int8)
    assert engine.class_token_only is prune
    assert any(e["event"] == "engine.pruned" for e in logs) is prune
    images = tiny_splits()["test"].images
    for rows in (slice(0, 1), slice(0, 7), slice(0, len(images))):
        assert np.array_equal(engine.embed(images[rows]), whole.embed(images[rows]))


def test_engine_when_the_cut_tower_scores_other_bits_then_the_whole_graph_serves(
    exported: Path, static_int8: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = load_bundle(exported)
    fp32 = (exported / FP32_FILE).read_bytes()  # a tower that scores other bits than INT8's
    monkeypatch.setattr(onnx_runtime_module, "class_token_only", lambda _model: fp32)
    with capture_logs() as logs:
        engine = OnnxEngine(bundle=bundle, config=CONFIG, variant="int8", model=static_int8)
    assert not engine.class_token_only
    refused = [e for e in logs if e["event"] == "engine.prune_refused"]
    assert len(refused) == 1
    assert refused[0]["reason"] == "embeddings differ from the whole graph's"
    assert refused[0]["max_difference"] > 0
    monkeypatch.undo()
    images = tiny_splits()["test"].images[:5]
    served = OnnxEngine(bundle=bundle, config=CONFIG, variant="int8", model=static_int8)
    assert served.class_token_only
    assert np.array_equal(engine.embed(images), served.embed(images))


def test_class_token_only_when_no_class_token_is_read_then_refused() -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["embeddings"])],
        "identity",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["charts", 4])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["charts", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(PruneRefused, match="0 Gathers of token 0"):
        class_token_only(model.SerializeToString())


def test_onnx_proto_when_onnx_is_not_imported_then_neither_it_nor_ml_dtypes_loads() -> None:
    import os
    import subprocess
    import sys

    # ml_dtypes, which the onnx package's __init__ imports, costs 0.5 s of a bundle load
    check = (
        "import sys; from vlm_engine.infer.onnx_prune import onnx_proto; pb = onnx_proto(); "
        "m = pb.ModelProto(); m.ParseFromString(pb.ModelProto(ir_version=8).SerializeToString()); "
        "assert m.ir_version == 8; "
        "print(sorted(n for n in ('onnx', 'ml_dtypes') if n in sys.modules))"
    )
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", check],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert done.stdout.strip() == "[]"
