"""The CLIP image tower as ONNX files in the bundle: fp32, INT8 and the charts their parity is measured on.

The graph takes the charts as the renderer draws them, (N, H, W, 3) uint8, and returns unit
image embeddings (N, D) float32: the resize to the model's input (antialiased bilinear, as
ImagePreprocessor does, written as two constant matrices) and the pixel normalisation (folded
into the patch embedding, as InferenceEngine does) are inside it. The read-out against the
prompt embeddings and the calibration stay outside (ChartEngine), so `vlmtrader calibrate`
never makes the export stale; the card's stage "onnx" names the CLIP weights it came from.

INT8 is onnxruntime.quantization's static quantization (QDQ, per-channel int8 weights, uint8
activations with scales calibrated on charts of the bundle's training split) of the weight
MatMuls and, where parity holds, the patch embedding (fed the uint8 pixels themselves): fixed
scales, so a chart scores the same whatever batch it comes in. It is stored as onnxruntime
optimizes it, with the bias adds folded into the integer MatMuls (fold_biases); the
transformers optimizer's fusions (onnxruntime.transformers.optimizer, model_type clip, on an
eager-attention export: 2 Attention, 3 SkipLayerNormalization) are not used: on this 64-wide,
37-token tower they made it slower (fp32, 50 charts, one thread: fastest call 8.1 ms fused vs 7.0
unfused; SkipLayerNormalization 4.7 ns per element against 0.9 for LayerNormalization, an
Attention node 1.1 ms against about 1.0 for the ops it replaces; load 4-6, ORT 1.31.1). What is written into a bundle passed its parity check on the bundle's
test split (onnx_bundle); whether it may serve is checked again at load (runtime_choice) on the
parity charts, a sample of that split stored beside it. Bundles exported before carry dynamic
INT8 (scales from each call's whole batch); the card's stage says which (`quantization`).
"""

from __future__ import annotations

import copy
import hashlib
import io
import tempfile
import warnings
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import structlog
import torch
import torch.nn.functional as F

from vlm_engine.bundle.bundle import CLIP_DIR
from vlm_engine.clip.model import ClipParts
from vlm_engine.render import ChartSpec

log = structlog.get_logger("vlm_engine.infer")

ONNX_DIR = "onnx"
FP32_FILE = f"{ONNX_DIR}/image_fp32.onnx"
INT8_FILE = f"{ONNX_DIR}/image_int8.onnx"
PARITY_FILE = f"{ONNX_DIR}/parity.npz"
STAGE = "onnx"
OPSET = 17
INPUT, OUTPUT = "images", "embeddings"
PARITY_CHARTS = 512  # test charts kept for the load-time parity check (evenly spaced)


def resize_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in): F.interpolate's antialiased bilinear resize of one axis as a matrix."""
    eye = torch.eye(size_in, dtype=torch.float64).view(1, 1, size_in, size_in)
    resized = F.interpolate(
        eye, size=(size_out, size_in), mode="bilinear", antialias=True, align_corners=False
    )
    return resized[0, 0].float()


class PatchEmbeddings(torch.nn.Module):
    """CLIP's vision embeddings on uint8 NHWC charts of the model's own size: the patches are cut
    from the uint8 pixels (a reshape and a transpose of bytes), cast once, and embedded by one
    MatMul against the folded patch weights, in place of NHWC -> NCHW, a cast of every pixel and
    the convolution's im2col. The same sums, so fp32 parity holds; for INT8 the MatMul's input is
    the pixels themselves (quantize_int8 feeds them to it uncast: exact)."""

    def __init__(self, embeddings: Any, height: int, width: int) -> None:
        super().__init__()
        conv = embeddings.patch_embedding
        self.patch = int(conv.kernel_size[0])
        self.grid = (height // self.patch, width // self.patch)
        dim = int(conv.out_channels)
        # (out, c, kh, kw) -> (kh * kw * c, out): the order a NHWC patch flattens in
        self.weight = torch.nn.Parameter(
            conv.weight.detach().permute(2, 3, 1, 0).reshape(-1, dim).contiguous()
        )
        self.bias = torch.nn.Parameter(conv.bias.detach().clone())
        self.cls = torch.nn.Parameter(embeddings.class_embedding.detach().view(1, 1, dim).clone())
        self.positions = torch.nn.Parameter(
            embeddings.position_embedding(embeddings.position_ids).detach().clone()
        )

    def forward(self, images: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        (rows, cols), p = self.grid, self.patch
        patches = images.reshape(-1, rows, p, cols, p, 3).permute(0, 1, 3, 2, 4, 5)
        tokens = patches.reshape(-1, rows * cols, p * p * 3).float() @ self.weight + self.bias
        cls = self.cls.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.positions


class ImageTower(torch.nn.Module):
    """uint8 NHWC charts of one spec -> unit CLIP image embeddings; what the ONNX file computes."""

    def __init__(self, parts: ClipParts, spec: ChartSpec) -> None:
        super().__init__()
        model: Any = copy.deepcopy(parts.model).float().eval()
        embeddings = model.vision_model.embeddings
        embeddings.patch_embedding = parts.preprocess.fold_into(embeddings.patch_embedding)
        size = parts.preprocess.size
        self.resize = (spec.height, spec.width) != (size, size)
        if not self.resize:  # the charts are the model's input: embed their uint8 patches
            model.vision_model.embeddings = PatchEmbeddings(embeddings, size, size)
        self.model = model
        self.rows: torch.Tensor
        self.cols: torch.Tensor
        self.register_buffer("rows", resize_matrix(spec.height, size))
        self.register_buffer("cols", resize_matrix(spec.width, size).T.contiguous())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.resize:
            pixels = self.rows @ images.permute(0, 3, 1, 2).float() @ self.cols
        else:
            pixels = images  # PatchEmbeddings cuts the uint8 NHWC charts itself
        out = self.model.get_image_features(pixel_values=pixels)
        features = out.pooler_output if hasattr(out, "pooler_output") else out
        return F.normalize(features, dim=-1)


def export_fp32(parts: ClipParts, spec: ChartSpec) -> bytes:
    """The image tower as an ONNX model (dynamic batch size)."""
    tower = ImageTower(parts, spec)
    example = torch.zeros((2, spec.height, spec.width, 3), dtype=torch.uint8)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter: torch.export's needs onnxscript, and this graph has no control flow.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            tower,
            (example,),
            buffer,  # type: ignore[arg-type]  # a file-like object works (torch's annotation is narrower)
            dynamo=False,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "charts"}, OUTPUT: {0: "charts"}},
            opset_version=OPSET,
        )
    return buffer.getvalue()


def weight_matmuls(model_path: Path) -> list[str]:
    """The MatMuls against a weight of the encoder and projection: not the resize (its matrices
    act on raw pixels), not attention's activation x activation products, not the patch embedding."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    weights = {w.name for w in graph.initializer}
    return [
        n.name
        for n in graph.node
        if n.op_type == "MatMul"
        and n.input[1] in weights
        and "rows" not in n.input
        and "/embeddings/" not in n.name
    ]


def patch_embedding(model_path: Path) -> list[str]:
    """The patch embedding: PatchEmbeddings' MatMul, or the convolution of a tower that resizes."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    return [
        n.name
        for n in graph.node
        if (n.op_type == "MatMul" and "/embeddings/" in n.name) or n.op_type == "Conv"
    ]


def _pixel_casts(model_path: Path) -> dict[str, str]:
    """Cast nodes of uint8 pixels to float in the embeddings (PatchEmbeddings' one): their output
    -> their input."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info]}
    return {
        n.output[0]: n.input[0]
        for n in graph.node
        if n.op_type == "Cast"
        and "/embeddings/" in n.name
        and types.get(n.input[0]) == onnx.TensorProto.UINT8
    }


def _uncast(model: Any, casts: dict[str, str]) -> None:
    """Feed uint8 pixels straight into their DequantizeLinear: drop Cast -> QuantizeLinear pairs
    whose scale is 1 and zero point 0 (a no-op on bytes), so no pixel is cast or requantized."""
    from onnx import numpy_helper

    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    dropped, renamed = [], {}
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in casts:
            continue
        scale, zero = consts.get(node.input[1]), consts.get(node.input[2])
        if scale is None or zero is None or zero.dtype != np.uint8:
            continue
        if float(scale) != 1.0 or int(zero) != 0:
            continue
        renamed[node.output[0]] = casts[node.input[0]]
        dropped.append(node)
    dropped += [n for n in graph.node if n.op_type == "Cast" and n.output[0] in casts]
    for node in dropped:
        graph.node.remove(node)
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)


class QuantPlan(msgspec.Struct, frozen=True):
    """Which nodes a static INT8 export quantizes, and its card's words for them."""

    name: str
    patch: bool


# Tried in order until one passes parity: the patch embedding too, else the weight MatMuls alone.
# On boot_quiet both held; the CPU per chart of fp32 was 0.715 with the patch embedding and 0.82
# without (dynamic INT8: 0.84), alternated in one run at load 14.
QUANT_PLANS = (
    QuantPlan("weight MatMuls + patch embedding", patch=True),
    QuantPlan("weight MatMuls", patch=False),
)
STATIC, DYNAMIC = "static", "dynamic"
CALIBRATION_CHARTS = 256  # training charts the activation ranges are taken from (evenly spaced)
CALIBRATION_BATCH = 32


class _Charts:
    """onnxruntime's CalibrationDataReader over calibration charts, CALIBRATION_BATCH at a time."""

    def __init__(self, images: npt.NDArray[np.uint8]) -> None:
        self._batches = iter(
            [
                {INPUT: images[i : i + CALIBRATION_BATCH]}
                for i in range(0, len(images), CALIBRATION_BATCH)
            ]
        )

    def get_next(self) -> dict[str, npt.NDArray[np.uint8]] | None:
        return next(self._batches, None)


def _prepared(fp32: bytes, tmp: Path) -> Path:
    """The tower with onnxruntime's pre-processing for quantization (shapes, folded constants)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, prepared = tmp / "fp32.onnx", tmp / "pre.onnx"
    source.write_bytes(fp32)
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    return prepared


def quantize_int8(fp32: bytes, calibration: npt.NDArray[np.uint8], plan: QuantPlan) -> bytes:
    """Static INT8 of an exported tower: QDQ, int8 weights per output channel, uint8 activations
    with fixed scales taken (min-max) from `calibration` charts, which must come from the training
    split. Fixed scales make a chart's embedding independent of its batch-mates, bit for bit."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory(prefix="vlmtrader-onnx-") as tmp:
        prepared, target = _prepared(fp32, Path(tmp)), Path(tmp) / "int8.onnx"
        nodes = weight_matmuls(prepared) + (patch_embedding(prepared) if plan.patch else [])
        casts = _pixel_casts(prepared) if plan.patch else {}
        exact = {"scale": np.array(1.0, np.float32), "zero_point": np.array(0, np.uint8)}
        quantize_static(
            str(prepared),
            str(target),
            _Charts(calibration[evenly(len(calibration), CALIBRATION_CHARTS)]),  # type: ignore[arg-type]  # the reader protocol
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Conv"],
            nodes_to_quantize=nodes,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={
                "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
                # fp32 out of each MatMul (MatMulIntegerToFloat), not requantized for the next op
                "OpTypesToExcludeOutputQuantization": ["MatMul"],
                # pixels are bytes already: quantized with scale 1 and zero point 0 they are exact
                "TensorQuantOverrides": {name: [exact] for name in casts},
            },
        )
        model = onnx.load(str(target))
        _uncast(model, casts)
        return fold_biases(bytes(model.SerializeToString()))


# What fold_biases does, in the card's words (stage "onnx", key "int8_graph").
FOLDED = (
    "onnxruntime extended optimizations applied offline, bias adds folded into MatMulIntegerToFloat"
)


def fold_biases(qdq: bytes) -> bytes:
    """A static INT8 tower as ONNX Runtime runs it, with its bias adds folded: the graph after
    onnxruntime's extended (portable, hardware-independent) optimizations, which turn each
    QDQ weight MatMul into a MatMulIntegerToFloat, and then each Add of a bias vector to one of
    those outputs dropped into that node's bias input. onnxruntime leaves those Adds as separate
    passes over the activations (13 in the 96 px tower, 14% of its time); as the node's bias the
    add happens in the integer GEMM's output pass. The sums are the same: embeddings equal bit
    for bit on the 96 px bundle's 512 parity charts; thread CPU per call, 200 alternating pairs
    in one process at load ~5: new/old median 0.923 [0.884, 0.957] at 50 charts, 0.934 [0.904,
    0.956] at 100 (bootstrap 95%)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="vlmtrader-onnx-") as tmp:
        source, optimized = Path(tmp) / "qdq.onnx", Path(tmp) / "optimized.onnx"
        source.write_bytes(qdq)
        options = ort.SessionOptions()
        # extended, not all: "all" adds layout changes for this CPU only (NCHWc), not to be stored
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(optimized)
        options.log_severity_level = 3
        ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(optimized))
    _fold_bias_adds(model.graph)
    return bytes(model.SerializeToString())


def _fold_bias_adds(graph: Any) -> None:
    """Drop each Add of a constant vector to the sole use of a bias-less MatMulIntegerToFloat's
    output into that node's bias input (its 7th), renaming the Add's output to the node's. Only a
    vector as long as the weight's columns: the bias input adds one per output column."""
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    uses: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            uses.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    renamed: dict[str, str] = {}
    for node in [n for n in graph.node if n.op_type == "MatMulIntegerToFloat"]:
        after = uses.get(node.output[0], [])
        if len(node.input) > 6 or len(after) != 1 or after[0].op_type != "Add":
            continue
        add = after[0]
        bias = add.input[1] if add.input[0] == node.output[0] else add.input[0]
        weight = shapes.get(node.input[1], ())
        if not weight or shapes.get(bias) != weight[-1:] or add.output[0] in outputs:
            continue
        node.input.extend([""] * (6 - len(node.input)) + [bias])
        renamed[add.output[0]] = node.output[0]
        graph.node.remove(add)
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)


def quantize_dynamic_int8(fp32: bytes) -> bytes:
    """The INT8 bundles were exported with before static INT8: dynamic quantization of the weight
    MatMuls, activations scaled per call by the range of the whole input batch, so a chart's
    embedding depends on its batch-mates. Kept to compare with (bench_clip) and to prove the
    batch-independence test can fail; no bundle is written with it."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="vlmtrader-onnx-") as tmp:
        prepared, target = _prepared(fp32, Path(tmp)), Path(tmp) / "int8.onnx"
        quantize_dynamic(
            str(prepared),
            str(target),
            weight_type=QuantType.QInt8,
            nodes_to_quantize=weight_matmuls(prepared),
        )
        return target.read_bytes()


def evenly(n: int, k: int) -> npt.NDArray[np.int64]:
    """At most k indexes spread evenly over range(n)."""
    if n <= k:
        return np.arange(n, dtype=np.int64)
    return np.linspace(0, n - 1, k).round().astype(np.int64)


def parity_npz(
    images: npt.NDArray[np.uint8], patterns: npt.NDArray[np.int64], direction: npt.NDArray[Any]
) -> bytes:
    """The parity charts: test images with their pattern class index (-1: none) and direction (-1, 0, 1)."""
    keep = evenly(len(images), PARITY_CHARTS)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        images=images[keep],
        patterns=np.asarray(patterns, dtype=np.int64)[keep],
        direction=np.asarray(direction, dtype=np.int8)[keep],
    )
    return buffer.getvalue()


def clip_digest(files: dict[str, str]) -> str:
    """One hash of the card's clip/ entries: the CLIP weights an export was made from."""
    digest = hashlib.sha256()
    for name, sha in sorted(files.items()):
        if name.startswith(f"{CLIP_DIR}/"):
            digest.update(f"{name}\0{sha}\n".encode())
    return digest.hexdigest()[:16]
