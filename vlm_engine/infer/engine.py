"""The warm inference engine: a bundle loaded once on its device, scoring batches of chart windows.

score_batch() is synchronous and thread-safe for one caller at a time per engine; the daemon
calls it through asyncio.to_thread so the event loop never waits on the model. On the CPU with one
torch thread per call, a batch is split over `workers` chunks (torch and ONNX Runtime release
the GIL inside their kernels), so a 100-chart batch uses every core without OpenMP's
spin-waiting: the pool renders and scores all chunks but the last, the calling thread the last
one. start_batch() lets the caller do other work (the ML scorer's features) before its chunk.

ChartEngine holds what every runtime shares (rendering, chunking over workers, the calibrated
read-out); InferenceEngine runs the image tower on torch, vlm_engine.infer.onnx_runtime on ONNX
Runtime, and vlm_engine.infer.runtime_choice picks one per InferenceConfig.runtime.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt
import structlog
import torch

from vlm_engine.bundle import Bundle, load_bundle
from vlm_engine.calibrate.metrics import softmax
from vlm_engine.clip.encode import class_embeddings, logit_scale
from vlm_engine.metrics import sigmoid
from vlm_engine.render import ChartSpec, ChartWindow, make_renderer

log = structlog.get_logger("vlm_engine.infer")

Float32Array = npt.NDArray[np.float32]
DeviceName = Literal["auto", "cpu", "cuda"]
RuntimeName = Literal["auto", "torch", "onnx", "onnx-int8"]


# A worker's share of a batch is at least this many charts: smaller chunks cost more in per-call
# overhead than the second core gives back.
MIN_CHARTS_PER_WORKER = 4
MAX_AUTO_WORKERS = 4


class InferenceConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where and how the model runs; threads 0 keeps torch's default.

    workers: threads a batch is split over on the CPU. 0 (auto) is one per core (at most 4) when
    torch runs one thread per call (threads 1), else 1; always 1 on CUDA.
    runtime: torch, the bundle's ONNX export in fp32 or INT8, or auto (the fastest of them whose
    parity holds on the bundle's parity charts, measured at load); see runtime_choice.
    """

    device: DeviceName = "auto"
    max_batch: Annotated[int, msgspec.Meta(gt=0)] = 64
    warmup_batches: Annotated[int, msgspec.Meta(ge=0)] = 2
    threads: Annotated[int, msgspec.Meta(ge=0)] = 0
    workers: Annotated[int, msgspec.Meta(ge=0)] = 0
    half_on_cuda: bool = True
    runtime: RuntimeName = "torch"


def resolve_workers(config: InferenceConfig, device: torch.device) -> int:
    """How many threads score one batch (see InferenceConfig.workers)."""
    if device.type != "cpu":
        return 1
    if config.workers:
        return config.workers
    return min(MAX_AUTO_WORKERS, os.cpu_count() or 1) if config.threads == 1 else 1


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """One process-wide pool per size, shared by every engine (live, shadow, swapped-out) and never shut
    down, so a swap in the middle of a call can never find its pool closed."""
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="clip-worker")
        return pool


class ClipScores(msgspec.Struct, frozen=True, kw_only=True):
    """One chart's calibrated outputs: pattern probabilities (in `classes` order), p_up and the embedding."""

    bundle_id: str
    classes: tuple[str, ...]
    pattern_probs: tuple[float, ...]
    top_pattern: str
    top_probability: float
    p_up: float
    embedding: tuple[float, ...] = ()


class ClipBatch(msgspec.Struct, frozen=True, kw_only=True, eq=False):
    """A batch's outputs as arrays: pattern_probs (N, K), p_up (N,), embeddings (N, D).

    render_seconds: the batch's wall time spent drawing its charts (the workers' drawing time over
    how many drew at once; 0 for given images). images: the uint8 charts scored, as the chunks
    they were scored in (references, no copy; rows in order), for the explainer off the path."""

    bundle_id: str
    classes: tuple[str, ...]
    pattern_probs: Float32Array
    p_up: Float32Array
    embeddings: Float32Array
    render_seconds: float = 0.0
    images: tuple[npt.NDArray[np.uint8], ...] = ()

    def __len__(self) -> int:
        return int(self.p_up.shape[0])

    def row(self, index: int, *, with_embedding: bool = False) -> ClipScores:
        probs = self.pattern_probs[index]
        top = int(np.argmax(probs)) if probs.size else 0
        return ClipScores(
            bundle_id=self.bundle_id,
            classes=self.classes,
            pattern_probs=tuple(float(p) for p in probs),
            top_pattern=self.classes[top] if self.classes else "",
            top_probability=float(probs[top]) if probs.size else 0.0,
            p_up=float(self.p_up[index]),
            embedding=tuple(float(v) for v in self.embeddings[index]) if with_embedding else (),
        )


# One chunk's (pattern probabilities, p_up, embeddings, seconds spent drawing its charts, charts).
_Chunk = tuple[Float32Array, Float32Array, Float32Array, float, npt.NDArray[np.uint8]]


def resolve_device(name: DeviceName) -> torch.device:
    """auto: CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def readout_matrix(bundle: Bundle) -> Float32Array:
    """(K + 1, D) float32: the K pattern class embeddings, then up - down, times the logit scale
    (pattern logits and the direction logit z = scale * e . (u - d) of a unit embedding e)."""
    parts = bundle.parts
    pattern = class_embeddings(parts, list(bundle.prompts.patterns.values()))
    direction = class_embeddings(parts, [bundle.prompts.down, bundle.prompts.up])
    readout = np.vstack([pattern, (direction[1] - direction[0])[None, :]]) * logit_scale(parts)
    return readout.astype(np.float32)


class ChartEngine:
    """What every runtime shares: a bundle's renderer, batches chunked over the workers, the
    calibrated read-out; a runtime implements _embed() (unit embeddings of a uint8 chunk) or
    _score_chunk()."""

    bundle: Bundle
    config: InferenceConfig
    classes: tuple[str, ...]
    workers: int
    runtime: str
    dim: int

    def _setup(self, *, bundle: Bundle, config: InferenceConfig, workers: int) -> None:
        self.bundle = bundle
        self.config = config
        self.renderer = make_renderer(bundle.spec)
        self.classes = bundle.prompts.classes
        self.workers = workers
        self._temperature = bundle.calibration.pattern_temperature
        self._a, self._b = bundle.calibration.direction_a, bundle.calibration.direction_b

    @property
    def bundle_id(self) -> str:
        return self.bundle.bundle_id

    @property
    def spec(self) -> ChartSpec:
        return self.bundle.spec

    def warm_up(self) -> None:
        """Run a few dummy batches so the first real batch pays no allocation or kernel-selection cost."""
        spec = self.bundle.spec
        dummy = np.zeros(
            (min(8, self.config.max_batch), spec.height, spec.width, 3), dtype=np.uint8
        )
        for _ in range(self.config.warmup_batches):
            self.score_images(dummy)
            self.score_images(dummy[:1])
        log.info(
            "engine.warmed",
            bundle_id=self.bundle_id,
            runtime=self.runtime,
            **self._describe(),
            workers=self.workers,
        )

    def _describe(self) -> dict[str, str]:
        return {}

    def render(self, windows: Sequence[ChartWindow]) -> npt.NDArray[np.uint8]:
        """Charts of the bundle's spec for the windows (the last spec.bars_needed bars of each)."""
        return self.renderer.render_batch(list(windows))

    def score_batch(self, windows: Sequence[ChartWindow]) -> ClipBatch:
        """Render and score windows that closed together; one row per window, in order."""
        return self.start_batch(windows)()

    def start_batch(self, windows: Sequence[ChartWindow]) -> Callable[[], ClipBatch]:
        """score_batch() in two halves: the other workers start on their chunks now; calling the
        returned join renders and scores the last chunk in the calling thread, then collects the
        batch (same chunks, same rows as score_batch). Between the two the caller is free (the
        ML scorer computes its technical features there). Call join exactly once; errors are
        raised by join, never by start_batch."""
        if not windows:
            return self._empty
        if not self.renderer.thread_safe:  # drawn and scored in join(), in the calling thread
            return lambda: self._render_then_score(windows)
        # Each worker renders its own chunk too: drawing is NumPy, mostly outside the GIL.
        items = list(windows)

        def render_and_score(rows: slice) -> _Chunk:
            started = time.perf_counter()
            images = self.render(items[rows])
            rendered = time.perf_counter() - started
            return (*self._score_chunk(images), rendered, images)

        return self._start(len(items), render_and_score)

    def _render_then_score(self, windows: Sequence[ChartWindow]) -> ClipBatch:
        """A renderer that is not thread-safe draws the whole batch first, in the calling thread."""
        started = time.perf_counter()
        images = self.render(windows)
        rendered = time.perf_counter() - started
        return msgspec.structs.replace(self.score_images(images), render_seconds=rendered)

    def score_images(self, images: npt.NDArray[np.uint8]) -> ClipBatch:
        """Score (N, H, W, 3) uint8 charts of the bundle's spec, in chunks of at most max_batch, split
        over the engine's workers; rows come back in order."""
        if images.shape[0] == 0:
            return self._empty()
        return self._start(
            images.shape[0], lambda rows: (*self._score_chunk(images[rows]), 0.0, images[rows])
        )()

    def _start(self, n: int, score: Callable[[slice], _Chunk]) -> Callable[[], ClipBatch]:
        """score() each chunk of n rows, merged in order, as a join to call once. When the chunks
        fit the workers at once, all but the last go to the pool now and the caller scores the
        last one in join() (a pool hand-off and a wake-up fewer than waiting on every chunk);
        more chunks than workers all go through the pool."""
        chunks = self._chunks(n)
        parallel = min(len(chunks), self.workers)
        if parallel <= 1:
            return lambda: self._merge([score(rows) for rows in chunks], parallel)
        pool = _pool(self.workers)
        if len(chunks) > self.workers:
            parts = pool.map(score, chunks)
            return lambda: self._merge(list(parts), parallel)
        started = [pool.submit(score, rows) for rows in chunks[:-1]]

        def join() -> ClipBatch:
            last = score(chunks[-1])
            return self._merge([*(f.result() for f in started), last], parallel)

        return join

    def _merge(self, parts: list[_Chunk], parallel: int) -> ClipBatch:
        """The chunks' outputs as one batch, rows in chunk order."""
        return ClipBatch(
            bundle_id=self.bundle_id,
            classes=self.classes,
            pattern_probs=np.concatenate([p[0] for p in parts]),
            p_up=np.concatenate([p[1] for p in parts]),
            embeddings=np.concatenate([p[2] for p in parts]),
            render_seconds=sum(p[3] for p in parts) / max(parallel, 1),
            images=tuple(p[4] for p in parts),
        )

    def _chunks(self, n: int) -> list[slice]:
        """Contiguous row ranges: one per worker (each at least MIN_CHARTS_PER_WORKER), at most max_batch."""
        size = n
        if self.workers > 1:
            size = max(-(-n // self.workers), MIN_CHARTS_PER_WORKER)
        size = min(size, self.config.max_batch)
        return [slice(start, min(n, start + size)) for start in range(0, n, size)]

    def _score_chunk(
        self, images: npt.NDArray[np.uint8]
    ) -> tuple[Float32Array, Float32Array, Float32Array]:
        raise NotImplementedError

    def _calibrated(
        self, scores: Float32Array, features: Float32Array
    ) -> tuple[Float32Array, Float32Array, Float32Array]:
        """(pattern probabilities, p_up, embeddings) from read-out scores (N, K + 1)."""
        logits, z = scores[:, :-1], scores[:, -1]
        return (
            softmax(logits / self._temperature).astype(np.float32),
            sigmoid(self._a * z + self._b).astype(np.float32),
            features,
        )

    def _empty(self) -> ClipBatch:
        return ClipBatch(
            bundle_id=self.bundle_id,
            classes=self.classes,
            pattern_probs=np.zeros((0, len(self.classes)), dtype=np.float32),
            p_up=np.zeros(0, dtype=np.float32),
            embeddings=np.zeros((0, self.dim), dtype=np.float32),
        )


class InferenceEngine(ChartEngine):
    """A bundle on its torch device with prompt features precomputed; render + score in one call."""

    runtime = "torch"

    def __init__(self, *, bundle: Bundle, config: InferenceConfig) -> None:
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = resolve_device(config.device)
        self.dtype = (
            torch.float16 if self.device.type == "cuda" and config.half_on_cuda else torch.float32
        )
        self._setup(bundle=bundle, config=config, workers=resolve_workers(config, self.device))
        parts = bundle.parts
        # Prompt features are fixed per bundle: compute them once, in float32 on the CPU.
        readout = readout_matrix(bundle)
        # The engine owns the bundle's model: the preprocessor's normalisation is folded into the
        # patch embedding, so a chunk goes from uint8 straight into the model (no float pass).
        embeddings: Any = getattr(getattr(parts.model, "vision_model", None), "embeddings", None)
        self._folded = isinstance(getattr(embeddings, "patch_embedding", None), torch.nn.Conv2d)
        if self._folded:
            embeddings.patch_embedding = parts.preprocess.fold_into(embeddings.patch_embedding)
        self.model: Any = parts.model.to(self.device, dtype=self.dtype).eval()
        self._readout = torch.from_numpy(readout).to(self.device, self.dtype)
        self.dim = int(readout.shape[1])
        self._pin = self.device.type == "cuda"
        self.warm_up()

    @classmethod
    def load(
        cls, path: Path, *, config: InferenceConfig | None = None, spec_hash: str | None = None
    ) -> InferenceEngine:
        """Load and validate a bundle (BundleError when unusable), move it to its device and warm it up."""
        return cls(
            bundle=load_bundle(path, spec_hash=spec_hash), config=config or InferenceConfig()
        )

    def _describe(self) -> dict[str, str]:
        return {"device": str(self.device), "dtype": str(self.dtype).removeprefix("torch.")}

    @torch.inference_mode()
    def _score_chunk(
        self, images: npt.NDArray[np.uint8]
    ) -> tuple[Float32Array, Float32Array, Float32Array]:
        """(pattern probabilities, p_up, embeddings) of one chunk; inference mode is per thread."""
        rows = np.ascontiguousarray(images)
        # On CUDA the uint8 batch goes through pinned memory.
        chunk: npt.NDArray[np.uint8] | torch.Tensor = (
            torch.from_numpy(rows).pin_memory() if self._pin else rows
        )
        preprocess = self.bundle.parts.preprocess
        pixels = (preprocess.raw if self._folded else preprocess)(chunk, device=self.device)
        pixels = pixels.to(self.dtype)
        out = self.model.get_image_features(pixel_values=pixels)
        features = out.pooler_output if hasattr(out, "pooler_output") else out
        features = torch.nn.functional.normalize(features.float(), dim=-1).to(self.dtype)
        scores = (features @ self._readout.T).float().cpu().numpy()
        return self._calibrated(scores, features.float().cpu().numpy())
