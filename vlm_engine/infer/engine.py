"""The warm inference engine: a bundle loaded once on its device, scoring batches of chart windows.

score_batch() is synchronous and thread-safe for one caller at a time per engine; the daemon
calls it through asyncio.to_thread so the event loop never waits on the model. On the CPU with one
torch thread per call, a batch is cut into chunks over the workers (torch and ONNX Runtime
release the GIL inside their kernels), so a 100-chart batch uses every core without OpenMP's
spin-waiting: the pool's threads and the calling thread take the chunks in turn until none is
left. start_batch() lets the caller do other work (the ML scorer's features) before it joins.

ChartEngine holds what every runtime shares (rendering, chunking over workers, the calibrated
read-out); InferenceEngine runs the image tower on torch, vlm_engine.infer.onnx_runtime on ONNX
Runtime, and vlm_engine.infer.runtime_choice picks one per InferenceConfig.runtime.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
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
from vlm_engine.render.errors import ChartError
from vlm_engine.thread_policy import FIFO, RESET_ON_FORK, at_policy

log = structlog.get_logger("vlm_engine.infer")

Float32Array = npt.NDArray[np.float32]
DeviceName = Literal["auto", "cpu", "cuda"]
RuntimeName = Literal["auto", "torch", "onnx", "onnx-int8"]
# How runtime auto resolves: timed at load (the daemon: the fastest here) or a fixed order,
# untimed (research runs: two machines score one bundle alike); see runtime_choice.
AutoRule = Literal["timed", "fixed-order"]


# A chunk is at least this many charts: smaller chunks cost more in per-call overhead than the
# second core gives back.
MIN_CHARTS_PER_WORKER = 4
# start_batch (the order path) cuts a batch only from this many charts: below it, a pool thread's
# wake-up and the GIL going back and forth cost more than the second core gives back. Measured
# with bench/bench_ml_arms.py (the start_batch schedule on 2 workers against 1, 250-300 paired
# calls, static INT8 at 96 px, load 3.4-5.7), one worker over two: 10 charts p50 0.90, process
# CPU 0.87; 20: p50 0.98, CPU 0.89; 30: p50 1.12, CPU 0.91; 100: p50 1.00, CPU 0.91.
# score_images (parity, timing, backtests) keeps MIN_CHARTS_PER_WORKER.
MIN_CHARTS_TO_SPLIT = 24
# A batch is cut into this many chunks per worker, taken in turn by whichever thread is free (the
# pool's, and the caller once it joins), so a pool thread that wakes late leaves its chunk to the
# caller. More, smaller chunks would balance finer but cost CPU, which is what a busy box lacks:
# 100 charts, 96 px static INT8, score_deferred alternating in one process, 500 calls each at load
# 4.2-6.0: 1 per worker p50/p99 30.0/71.8 ms, process CPU 17.0; 2: 31.3/78.8, 17.9; 3: 33.0/72.4,
# 18.7. (Measured when each chunk was also drawn by the thread that took it; with the caller
# drawing every chart, 1 still did no worse than 2 at load 4.3: p50 38.3 vs 38.8, CPU 20.7 vs 21.4.)
CHUNKS_PER_WORKER = 1
# start_batch's last chunk, the caller's, over a pool thread's: the caller embeds its own and then
# computes the features while the pool embeds the first (100 charts: 37 + features against 63).
CALLER_SHARE = 0.6
MAX_AUTO_WORKERS = 4
# start_batch draws the pool's chunks first and the caller's own while the pool embeds (False:
# every chart before any chunk is handed out; benches compare the two in one process). 100
# charts, idle box: the pool starts after 63 charts are drawn instead of 100 (~0.6 ms sooner).
RENDER_AHEAD = True
# How long the caller waits, once it has handed out the pool's chunks, for a pool thread to be
# about to embed before it draws its own chunk (drawing holds the GIL the woken thread needs to
# start): a pool thread awake on a free core takes well under this; one that is late finds the
# GIL free again once the caller embeds.
HANDOFF_SECONDS = 0.0005


class InferenceConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where and how the model runs; threads 0 keeps torch's default.

    workers: threads a batch is split over on the CPU. 0 (auto) is one per core (at most 4) when
    torch runs one thread per call (threads 1), else 1; always 1 on CUDA.
    runtime: torch, the bundle's ONNX export in fp32 or INT8, or auto (the fastest of them whose
    parity holds on the bundle's parity charts, measured at load); see runtime_choice.
    auto_rule: how auto picks among those: timed at load, or by a fixed order, untimed.
    """

    device: DeviceName = "auto"
    max_batch: Annotated[int, msgspec.Meta(gt=0)] = 64
    warmup_batches: Annotated[int, msgspec.Meta(ge=0)] = 2
    threads: Annotated[int, msgspec.Meta(ge=0)] = 0
    workers: Annotated[int, msgspec.Meta(ge=0)] = 0
    half_on_cuda: bool = True
    runtime: RuntimeName = "torch"
    auto_rule: AutoRule = "timed"


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


class _ChunkQueue:
    """The indices 0..n-1 of a batch's chunks, handed out once each to whichever thread asks: the
    pool's threads take them from the front, the caller from the back (its own, the smaller
    last chunk, first)."""

    def __init__(self, n: int) -> None:
        self._front = 0
        self._back = n
        self._lock = threading.Lock()

    def take(self, *, last: bool = False) -> int | None:
        """The first (or last) chunk not yet taken, None when every chunk is taken (or the batch
        stopped)."""
        with self._lock:
            if self._front >= self._back:
                return None
            if last:
                self._back -= 1
                return self._back
            self._front += 1
            return self._front - 1

    def stop(self) -> None:
        """Hand out no more chunks (a chunk failed: the batch's error is raised by its join)."""
        with self._lock:
            self._front = self._back


def _raise(error: BaseException) -> ClipBatch:
    raise error


def _at_callers_priority(work: Callable[[], int]) -> Callable[[], int]:
    """work for a pool thread, run at the calling thread's real-time policy when it has one and
    normal again after (errors included); otherwise work itself. The daemon raises the thread
    scoring a batch on its order path (daemon/runtime.py OrderPathPriority): the pool's chunks
    are that batch's work too, and a pool thread left normal would wait for a CPU behind other
    processes while the caller waits at the join. Read per batch: a pool is shared with callers
    at normal priority (the shadow, backtests), which it must not raise."""
    if FIFO < 0:  # not Linux: no real-time policy to follow
        return work
    policy = os.sched_getscheduler(0)
    if policy & ~RESET_ON_FORK != FIFO:
        return work
    return at_policy(work, policy, os.sched_getparam(0))


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


# One chunk's (unit embeddings, seconds spent drawing its charts, charts).
_Chunk = tuple[Float32Array, float, npt.NDArray[np.uint8]]


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
    calibrated read-out; a runtime implements embed() (unit embeddings of a uint8 chunk).

    The read-out runs once on the whole batch's embeddings (in _merge), not per chunk: a float32
    matmul's rows can round differently with the number of rows it is given (BLAS picks its
    kernel by shape), so reading out per chunk would tie a chart's scores to how the batch was
    cut; this way they depend on the batch's embeddings only, whichever threads scored them."""

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
        # Prompt features are fixed per bundle: computed once, float32 on the CPU, (D, K + 1).
        self._readout_t = readout_matrix(bundle).T.copy()
        self.dim = int(self._readout_t.shape[0])

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

    def render(
        self, windows: Sequence[ChartWindow], *, out: npt.NDArray[np.uint8] | None = None
    ) -> npt.NDArray[np.uint8]:
        """Charts of the bundle's spec for the windows (the last spec.bars_needed bars of each),
        into `out` when given."""
        return self.renderer.render_batch(list(windows), out=out)

    def score_batch(self, windows: Sequence[ChartWindow]) -> ClipBatch:
        """Render and score windows that closed together; one row per window, in order."""
        return self.start_batch(windows)()

    def start_batch(self, windows: Sequence[ChartWindow]) -> Callable[[], ClipBatch]:
        """score_batch() in two halves: the calling thread draws the pool's chunks (the first
        ones), hands them to the pool's threads, draws its own (the last, the smaller) while
        they embed, and embeds it before it returns; calling the returned join embeds what is
        left in the calling thread, then collects the batch (same chunks, same rows, same pixels
        as score_batch). Between the two the caller is free (the ML scorer computes its
        technical features there, while the pool embeds). Call join exactly once; errors are
        raised by join, never by start_batch.

        Why this order: drawing and the features are Python that holds the GIL, embedding (torch,
        ONNX Runtime) releases it. A pool thread woken while the caller draws or computes
        features must wait for the GIL before it can start embedding (up to the switch
        interval), so once it has handed out the pool's chunks the caller waits (at most
        HANDOFF_SECONDS) until a pool thread is about to embed, then draws its own chunk beside
        it; and it computes the features only after its own chunk is embedded. A chunk left to
        a thread other than the one it was meant for is drawn by whoever takes it.
        RENDER_AHEAD False: every chart drawn before any chunk is handed out (as before)."""
        if not windows:
            return self._empty
        if not self.renderer.thread_safe:  # drawn and scored in join(), in the calling thread
            return lambda: self._render_then_score(windows)
        items = list(windows)
        if self.workers <= 1:
            return lambda: self._render_then_score(items)
        chunks = self._batch_chunks(len(items))  # one chunk: embedded by the caller at the join
        if not RENDER_AHEAD or len(chunks) == 1:
            return self._start_drawn(items, chunks)
        spec = self.bundle.spec
        images = np.empty((len(items), spec.height, spec.width, 3), dtype=np.uint8)
        last = chunks[-1]
        ahead = slice(0, last.start)
        drawn = [0.0]
        started = time.perf_counter()
        try:
            self.render(items[ahead], out=images[ahead])
        except (ChartError, ValueError) as e:  # bad bars: raised by the join, as they were
            failed = e
            return lambda: _raise(failed)
        drawn[0] = time.perf_counter() - started
        entered = threading.Event()

        def score(rows: slice) -> _Chunk:
            if rows == last:  # drawn by whoever takes it (the caller, unless it is late)
                t0 = time.perf_counter()
                self.render(items[rows], out=images[rows])
                drawn[0] += time.perf_counter() - t0
            else:
                entered.set()  # the caller may draw its chunk now: this thread is in ORT soon
            return self.embed(images[rows]), 0.0, images[rows]

        join = self._start(
            chunks,
            score,
            caller_first=True,
            before_caller=lambda: entered.wait(HANDOFF_SECONDS) if HANDOFF_SECONDS else None,
        )
        return lambda: msgspec.structs.replace(join(), render_seconds=drawn[0])

    def _start_drawn(
        self, items: list[ChartWindow], chunks: list[slice]
    ) -> Callable[[], ClipBatch]:
        """start_batch with every chart drawn before any chunk is handed out."""
        started = time.perf_counter()
        try:
            images = self.render(items)
        except (ChartError, ValueError) as e:  # bad bars: raised by the join, as they were
            failed = e
            return lambda: _raise(failed)
        rendered = time.perf_counter() - started
        join = self._start(
            chunks, lambda rows: (self.embed(images[rows]), 0.0, images[rows]), caller_first=True
        )
        return lambda: msgspec.structs.replace(join(), render_seconds=rendered)

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
            self._chunks(images.shape[0]),
            lambda rows: (self.embed(images[rows]), 0.0, images[rows]),
        )()

    def _start(
        self,
        chunks: list[slice],
        score: Callable[[slice], _Chunk],
        *,
        caller_first: bool = False,
        before_caller: Callable[[], object] | None = None,
    ) -> Callable[[], ClipBatch]:
        """score() each chunk (row ranges in order), merged in order, as a join to call once. With more than
        one chunk and worker, workers - 1 pool threads start taking chunks now, from the first,
        and the caller takes what is left, from the last, when it joins (whoever is free takes
        the next one); a pool thread that has not started by the time the caller has taken the
        last chunk is cancelled, so the join never waits for a wake-up that brings no work. Which
        thread scores a chunk changes nothing in its rows: the chunks are the same slices whoever
        runs them. caller_first: the caller scores the last chunk now, before this returns (an
        error of it is raised by the join), after before_caller() when given (start_batch: wait
        until a pool thread is about to embed)."""
        helpers = min(len(chunks), self.workers) - 1
        if helpers <= 0:
            return lambda: self._merge([score(rows) for rows in chunks], 1)
        parts: list[_Chunk | None] = [None] * len(chunks)
        queue = _ChunkQueue(len(chunks))

        def take_chunks(*, last: bool = False, most: int = len(chunks)) -> int:
            """Score up to `most` chunks until none is left; how many this thread scored."""
            taken = 0
            while taken < most and (i := queue.take(last=last)) is not None:
                try:
                    parts[i] = score(chunks[i])
                except BaseException:
                    queue.stop()  # the batch has failed: nobody starts another chunk
                    raise
                taken += 1
            return taken

        helper = _at_callers_priority(take_chunks)
        started = [_pool(self.workers).submit(helper) for _ in range(helpers)]
        early: Exception | None = None
        first = 0
        if caller_first:
            try:
                if before_caller is not None:
                    before_caller()
                first = take_chunks(last=True, most=1)
            except Exception as e:  # raised by the join, once the pool lets go of the batch
                early = e

        def join() -> ClipBatch:
            try:
                if early is not None:
                    raise early
                mine = first + take_chunks(last=True)
            finally:
                running = [f for f in started if not f.cancel()]
                wait(running)  # no pool thread is left scoring, even when the caller failed
            scored = [mine, *(f.result() for f in running)]  # re-raises a pool thread's error
            done = [p for p in parts if p is not None]
            return self._merge(done, sum(1 for k in scored if k > 0))

        return join

    def _merge(self, parts: list[_Chunk], parallel: int) -> ClipBatch:
        """The chunks' embeddings as one batch, rows in chunk order, read out and calibrated."""
        embeddings = np.concatenate([p[0] for p in parts])
        probs, p_up = self.read_out(embeddings)
        return ClipBatch(
            bundle_id=self.bundle_id,
            classes=self.classes,
            pattern_probs=probs,
            p_up=p_up,
            embeddings=embeddings,
            render_seconds=sum(p[1] for p in parts) / max(parallel, 1),
            images=tuple(p[2] for p in parts),
        )

    def _chunks(self, n: int, *, caller_share: float = 1.0) -> list[slice]:
        """Contiguous row ranges of about equal size: CHUNKS_PER_WORKER per worker while each
        keeps MIN_CHARTS_PER_WORKER charts on average (10 charts over 2 workers: 5 and 5; 6: one
        of 6), at most max_batch. caller_share: the last chunk's size relative to the others (the
        caller takes it, and computes the features after it: start_batch)."""
        size = n
        if self.workers > 1:
            count = min(self.workers * CHUNKS_PER_WORKER, max(1, n // MIN_CHARTS_PER_WORKER))
            size = math.ceil(n / (count - 1 + caller_share)) if count > 1 else n
        size = max(1, min(size, self.config.max_batch))
        return [slice(start, min(n, start + size)) for start in range(0, n, size)]

    def _batch_chunks(self, n: int) -> list[slice]:
        """start_batch's chunks of n windows: the caller's (the last) is CALLER_SHARE of a pool
        thread's, as the caller draws every chart and computes its features before it joins;
        one chunk below MIN_CHARTS_TO_SPLIT charts."""
        if n < MIN_CHARTS_TO_SPLIT:
            size = self.config.max_batch
            return [slice(start, min(n, start + size)) for start in range(0, n, size)]
        return self._chunks(n, caller_share=CALLER_SHARE)

    def embed(self, images: npt.NDArray[np.uint8]) -> Float32Array:
        """Unit image embeddings (N, D) float32 of uint8 charts of the bundle's spec."""
        raise NotImplementedError

    def read_out(self, embeddings: Float32Array) -> tuple[Float32Array, Float32Array]:
        """(pattern probabilities, p_up) of unit embeddings: the read-out scores (N, K + 1)
        against the prompts, calibrated."""
        scores = embeddings @ self._readout_t
        logits, z = scores[:, :-1], scores[:, -1]
        return (
            softmax(logits / self._temperature).astype(np.float32),
            sigmoid(self._a * z + self._b).astype(np.float32),
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
        # The engine owns the bundle's model: the preprocessor's normalisation is folded into the
        # patch embedding, so a chunk goes from uint8 straight into the model (no float pass).
        embeddings: Any = getattr(getattr(parts.model, "vision_model", None), "embeddings", None)
        self._folded = isinstance(getattr(embeddings, "patch_embedding", None), torch.nn.Conv2d)
        if self._folded:
            embeddings.patch_embedding = parts.preprocess.fold_into(embeddings.patch_embedding)
        self.model: Any = parts.model.to(self.device, dtype=self.dtype).eval()
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
    def embed(self, images: npt.NDArray[np.uint8]) -> Float32Array:
        """Unit embeddings (N, D) float32 of one chunk; inference mode is per thread."""
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
        # rounded to the engine's dtype (fp16 on CUDA) as the model computes, read out in float32
        features = torch.nn.functional.normalize(features.float(), dim=-1).to(self.dtype)
        return np.asarray(features.float().cpu().numpy(), dtype=np.float32)
