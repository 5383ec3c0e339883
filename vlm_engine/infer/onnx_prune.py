"""The image tower's last encoder layer for the class token: an ONNX export rewritten at load.

CLIP's image embedding reads one token of the last encoder layer, the class token (Gather of
token 0, post-layernorm, projection). Every other token of that layer is computed and thrown
away: its query, its row of attention scores and softmax, its output projection, residual, layer
norm and MLP. The keys and values still need every token, so class_token_only() keeps them and
cuts the rest to the first KEPT_TOKENS tokens (the class token and one more, see there): a Slice
in front of the query projection and of the residual, and the attention's reshapes given
constant shapes. Every op it touches computes each token's row on its own (integer MatMuls,
per-row softmax and layer norms, elementwise ops, float MatMuls of more than one row), so the
embeddings should be the same bits; OnnxEngine serves the rewritten graph only once they are on
the bundle's parity charts, and the whole graph otherwise.

boot9 (80 px, 2 layers, 26 tokens), 63 charts, one thread, alternating in one process: static
INT8 4.28 -> 2.97 ms CPU per call (0.69), fp32 5.22 -> 3.82 (0.73); embeddings bit-identical on
the 512 parity charts in batches of 1, 2, 37, 63 and 512, and on live charts of 100 symbols:
INT8 100,100 (1,001 batches), fp32 20,100 (201 batches).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from vlm_engine.infer.errors import PruneRefused

# The attention's data path between the query projection and the output projection: what the
# walk from one to the other may pass through.
_MOVES = frozenset({"Reshape", "Transpose", "QuantizeLinear", "DequantizeLinear"})
_SCALES = frozenset({"Mul", "Div", "Add"})  # by a constant (a score scale, a bias)
_PROJECTIONS = frozenset({"MatMul", "MatMulIntegerToFloat"})
# Tokens the last layer keeps: the class token and the next one. Not the class token alone: with
# one row the float MatMuls of the cut layer rounded otherwise on 2 of 20,100 live charts (boot9
# static INT8: a uint8 activation flipped, 1e-3 in the embedding, and the fp32 tower on the
# parity charts), most likely MLAS's kernel for one-row matrices (MlasSgemmKernelM1), whose sums
# are not its many-row kernel's; with two rows none of 100,100 charts differed.
KEPT_TOKENS = 2


class _Graph:
    """An ONNX graph's producers, consumers and constants, looked up by tensor name."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in graph.node:
            for name in n.input:
                self.consumers.setdefault(name, []).append(n)
        self.tensors = {i.name: i for i in graph.initializer}
        for n in graph.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.tensors[n.output[0]] = n.attribute[0].t

    def made_by(self, name: str, ops: frozenset[str]) -> Any:
        """The node that produces `name` when its op is one of ops, else None."""
        node = self.producer.get(name)
        return node if node is not None and node.op_type in ops else None

    def is_constant(self, name: str) -> bool:
        return name in self.tensors

    def integers(self, name: str) -> npt.NDArray[np.int64] | None:
        """A constant int64 or int32 tensor's values (None for any other constant)."""
        tensor = self.tensors[name]
        kind = _INTEGERS.get(tensor.data_type)
        if kind is None:
            return None
        if tensor.raw_data:
            values = np.frombuffer(tensor.raw_data, dtype=kind)
        else:
            values = np.asarray(
                tensor.int64_data if kind == "<i8" else tensor.int32_data, dtype=np.int64
            )
        return values.astype(np.int64).reshape(tuple(tensor.dims))


# TensorProto.DataType: INT32 6, INT64 7 (little-endian raw_data, as ONNX stores it)
_INTEGERS = {6: "<i4", 7: "<i8"}
_NUMPY_TYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 11: np.float64}
_INT64 = 7


def onnx_proto() -> Any:
    """ONNX's protobuf classes (onnx.onnx_ml_pb2) without importing the onnx package, whose
    __init__ imports ml_dtypes (0.52 s of a bundle load, holding the GIL); the package's own
    module when it is already imported (the same classes: protobuf keeps one per message type).
    ImportError without onnx installed."""
    import importlib.util
    import sys

    if "onnx" in sys.modules:
        import onnx.onnx_ml_pb2

        return onnx.onnx_ml_pb2
    if (found := sys.modules.get(_PROTO_MODULE)) is not None:
        return found
    package = importlib.util.find_spec("onnx")  # finds it, runs nothing
    if package is None or not package.submodule_search_locations:
        msg = "onnx is not installed"
        raise ImportError(msg)
    spec = importlib.util.spec_from_file_location(
        _PROTO_MODULE, f"{package.submodule_search_locations[0]}/onnx_ml_pb2.py"
    )
    if spec is None or spec.loader is None:
        msg = "onnx/onnx_ml_pb2.py not found"
        raise ImportError(msg)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[_PROTO_MODULE] = module
    return module


_PROTO_MODULE = "vlm_engine_onnx_ml_pb2"


def _refuse(why: str) -> PruneRefused:
    return PruneRefused(f"class_token_only: {why}")


def _attribute(node: Any, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def _class_token_gather(g: _Graph) -> Any:
    """The Gather of token 0 (axis 1) that the embedding reads: exactly one."""
    found = [
        n
        for n in g.graph.node
        if n.op_type == "Gather"
        and _attribute(n, "axis", 0) == 1
        and g.is_constant(n.input[1])
        and (index := g.integers(n.input[1])) is not None
        and index.shape == ()
        and int(index) == 0
    ]
    if len(found) != 1:
        msg = f"{len(found)} Gathers of token 0, expected 1"
        raise _refuse(msg)
    return found[0]


def _projection_behind(g: _Graph, name: str) -> Any:
    """The weight projection (MatMul on a constant, then maybe a constant bias Add) making name."""
    node = g.producer.get(name)
    if node is not None and node.op_type == "Add":
        data = [i for i in node.input if not g.is_constant(i)]
        node = g.producer.get(data[0]) if len(data) == 1 else None
    if node is None or node.op_type not in _PROJECTIONS or not g.is_constant(node.input[1]):
        msg = f"{name} is not a weight projection"
        raise _refuse(msg)
    return node


def _walk_back(g: _Graph, node: Any, through: frozenset[str], reshapes: list[Any]) -> Any:
    """From node's first input up through ops of `through` (a Reshape's or Transpose's data, a
    scale's or bias's non-constant input), noting the Reshapes passed; the first node of
    another op (or a scale by something not constant)."""
    current = g.producer.get(node.input[0])
    while current is not None and current.op_type in through:
        data = current.input[0]
        if current.op_type in _SCALES:
            varying = [i for i in current.input if not g.is_constant(i)]
            if len(varying) != 1:
                break
            data = varying[0]
        if current.op_type == "Reshape":
            reshapes.append(current)
        current = g.producer.get(data)
    if current is None:
        msg = f"{node.name}: the walk back reached a graph input"
        raise _refuse(msg)
    return current


def class_token_only(model: bytes) -> bytes:
    """The model with its last encoder layer computed for the class token alone (see the module
    docstring); PruneRefused when the graph is not the one this knows how to cut."""
    import onnxruntime as ort

    from vlm_engine.infer.onnx_runtime import session_options

    pb = onnx_proto()
    proto = pb.ModelProto()
    proto.ParseFromString(model)
    g = _Graph(proto.graph)
    last = g.made_by(_class_token_gather(g).input[0], frozenset({"Add"}))
    if last is None:
        msg = "the class token is not taken from a residual Add"
        raise _refuse(msg)
    # last = after_attention + mlp; after_attention = h + attention's output projection
    after = next((g.producer[i] for i in last.input if g.made_by(i, frozenset({"Add"}))), None)
    if after is None:
        msg = "the last layer has no residual Add after its attention"
        raise _refuse(msg)
    residual = [
        i
        for i in after.input
        if any(c.op_type == "LayerNormalization" for c in g.consumers.get(i, []))
    ]
    if len(residual) != 1:
        msg = "the attention's residual input is not the layer's input"
        raise _refuse(msg)
    (hidden,) = residual
    out_proj = _projection_behind(g, next((i for i in after.input if i != hidden), hidden))
    reshapes: list[Any] = []
    weighted = _walk_back(g, out_proj, _MOVES, reshapes)
    softmax = g.made_by(weighted.input[0], frozenset({"Softmax"}))
    if weighted.op_type != "MatMul" or softmax is None:
        msg = "the output projection does not read softmax(scores) @ values"
        raise _refuse(msg)
    scores = _walk_back(g, softmax, _SCALES, [])
    if scores.op_type not in {"MatMul", "FusedMatMul"}:
        msg = "the softmax does not read query @ keys"
        raise _refuse(msg)
    q_proj = _walk_back(g, scores, _MOVES | _SCALES, reshapes)
    if q_proj.op_type not in _PROJECTIONS or not g.is_constant(q_proj.input[1]):
        msg = "the scores' query is not a weight projection"
        raise _refuse(msg)

    # the shapes the cut reshapes make, and the tokens, from the whole graph on 2 charts
    probe = pb.ModelProto()
    probe.ParseFromString(model)
    wanted = [q_proj.output[0], *(r.output[0] for r in reshapes)]
    probe.graph.output.extend(pb.ValueInfoProto(name=n) for n in wanted)
    session = ort.InferenceSession(
        probe.SerializeToString(),
        sess_options=session_options(1),
        providers=["CPUExecutionProvider"],
    )
    source = proto.graph.input[0]
    dims = [d.dim_value for d in source.type.tensor_type.shape.dim[1:]]
    if not all(dims):
        msg = "the input's dimensions past the batch are not fixed"
        raise _refuse(msg)
    dtype = _NUMPY_TYPES.get(source.type.tensor_type.elem_type)
    if dtype is None:
        msg = f"the input's element type {source.type.tensor_type.elem_type} is not known here"
        raise _refuse(msg)
    shapes = [o.shape for o in session.run(wanted, {source.name: np.zeros((2, *dims), dtype)})]
    tokens = int(shapes[0][1])
    if tokens <= KEPT_TOKENS:
        msg = f"the layer has {tokens} tokens, no more than the {KEPT_TOKENS} kept"
        raise _refuse(msg)

    graph = proto.graph

    def constant(name: str, values: list[int]) -> str:
        raw = np.asarray(values, dtype="<i8").tobytes()
        graph.initializer.append(
            pb.TensorProto(name=name, data_type=_INT64, dims=[len(values)], raw_data=raw)
        )
        return name

    for reshape, shape in zip(reshapes, shapes[1:], strict=True):
        if shape[0] != 2 or list(shape[1:]).count(tokens) != 1:
            msg = f"{reshape.name} makes {list(shape)}: no one token axis"
            raise _refuse(msg)
        one = [0, *(KEPT_TOKENS if d == tokens else int(d) for d in shape[1:])]  # 0: the batch
        reshape.input[1] = constant(f"{reshape.name}/class_token_shape", one)
    starts, ends, axes = (
        constant("class_token/starts", [0]),
        constant("class_token/ends", [KEPT_TOKENS]),
        constant("class_token/axes", [1]),
    )
    slices = []

    def class_token(name: str) -> str:
        out = f"{name}/class_token"
        slices.append(
            pb.NodeProto(op_type="Slice", input=[name, starts, ends, axes], output=[out], name=out)
        )
        return out

    q_proj.input[0] = class_token(q_proj.input[0])
    after.input[list(after.input).index(hidden)] = class_token(hidden)
    nodes = _without_dead(graph, [*slices, *graph.node])
    _forget_shapes(graph, nodes, [n.output[0] for n in slices])
    del graph.node[:]
    graph.node.extend(_in_order(graph, nodes))
    return bytes(proto.SerializeToString())


def _forget_shapes(graph: Any, nodes: list[Any], cut: list[str]) -> None:
    """Drop the shapes the export recorded (value_info) for every tensor downstream of the cut
    tensors: they said every token; ONNX Runtime infers them again."""
    changed = set(cut)
    grew = True
    while grew:
        grew = False
        for n in nodes:
            if changed.intersection(n.input) and not changed.issuperset(n.output):
                changed.update(n.output)
                grew = True
    kept = [v for v in graph.value_info if v.name not in changed]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def _without_dead(graph: Any, nodes: list[Any]) -> list[Any]:
    """nodes less those whose outputs nothing reads (the shape arithmetic of the cut reshapes)."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for n in nodes for i in n.input} | outputs
        kept = [n for n in nodes if any(o in read for o in n.output)]
        if len(kept) == len(nodes):
            return kept
        nodes = kept


def _in_order(graph: Any, nodes: list[Any]) -> list[Any]:
    """nodes in an order where every input is made before it is read (ONNX requires it)."""
    made = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    ordered: list[Any] = []
    pending = list(nodes)
    while pending:
        ready = [n for n in pending if all(i in made for i in n.input)]
        if not ready:
            msg = "the rewritten graph has a cycle"
            raise _refuse(msg)
        for n in ready:
            made.update(n.output)
        ordered += ready
        pending = [n for n in pending if not any(n is r for r in ready)]
    return ordered
