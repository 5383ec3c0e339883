"""The analog index: CLIP image embeddings of a bundle's training charts, searchable by similarity.

Stored in the bundle under ANALOG_DIR (every file hashed in the model card like the others):
    analogs/index.json       horizon, chart spec hash, and per row: symbol, ts (close of the
                             chart's last bar, epoch s), forward return over the horizon,
                             detected pattern label(s) (empty: none), PNG byte offsets
    analogs/embeddings.npy   (rows, dim) float16, unit length: the bundle's fine-tuned image tower
    analogs/charts.bin       the charts as PNG bytes, one after the other (offsets in index.json)

Search is exact: one matrix product against every row (5,000 x 512 is ~10 MB of float32 and a
few milliseconds a query, so an approximate index would buy nothing at this size).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import msgspec
import numpy as np
import numpy.typing as npt
from PIL import Image

from vlm_engine.bundle.errors import BundleError

ANALOG_DIR = "analogs"
INDEX_FILE = f"{ANALOG_DIR}/index.json"
EMBEDDINGS_FILE = f"{ANALOG_DIR}/embeddings.npy"
CHARTS_FILE = f"{ANALOG_DIR}/charts.bin"
INDEX_VERSION = 1

Float32Array = npt.NDArray[np.float32]


class AnalogIndexError(BundleError):
    """The bundle's analog index cannot be used (missing, corrupt or inconsistent files): rebuild the bundle."""


class UnknownAnalogRow(AnalogIndexError):
    """A row number outside the analog index (the caller asked for a row it does not hold)."""


class Analog(msgspec.Struct, frozen=True, kw_only=True):
    """One training chart near a query: its row, where it comes from, what followed it, how similar it is.

    forward_return is the fractional close-to-close change over the bundle's horizon; patterns are
    the chart's detected (or planted) labels on its last bar, empty when none fired.
    """

    row: int
    symbol: str
    ts: datetime
    forward_return: float
    patterns: tuple[str, ...]
    similarity: float


class AnalogManifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """index.json: everything about the rows except their embeddings and images."""

    version: int = INDEX_VERSION
    horizon_bars: Annotated[int, msgspec.Meta(gt=0)]
    spec_hash: str
    dim: Annotated[int, msgspec.Meta(gt=0)]
    symbols: list[str]
    ts: list[int]
    forward_return: list[float]
    patterns: list[tuple[str, ...]]
    chart_offsets: list[int]  # rows + 1 offsets into charts.bin


class AnalogIndex:
    """A loaded analog index: unit embeddings (float32 in memory), row facts and chart PNGs."""

    def __init__(
        self, *, manifest: AnalogManifest, embeddings: Float32Array, charts: bytes
    ) -> None:
        self.manifest = manifest
        self.horizon_bars = manifest.horizon_bars
        self.spec_hash = manifest.spec_hash
        self._embeddings = embeddings
        self._charts = charts
        self._ts = [datetime.fromtimestamp(t, tz=UTC) for t in manifest.ts]

    @classmethod
    def load(cls, directory: Path) -> AnalogIndex:
        """Read and cross-check the index under `directory` (a bundle's analogs/ directory or the
        bundle itself); AnalogIndexError, one line naming the file, when anything is wrong."""
        directory = Path(directory)
        if directory.name != ANALOG_DIR and (directory / ANALOG_DIR).is_dir():
            directory = directory / ANALOG_DIR
        index, vectors, charts = (
            directory / Path(name).name for name in (INDEX_FILE, EMBEDDINGS_FILE, CHARTS_FILE)
        )
        try:
            manifest = msgspec.json.decode(index.read_bytes(), type=AnalogManifest)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as e:
            msg = f"{index}: unreadable analog index ({_one_line(e)})"
            raise AnalogIndexError(msg) from None
        try:
            raw = np.load(vectors, allow_pickle=False)
            blob = charts.read_bytes()
        except (OSError, ValueError) as e:
            msg = f"{directory}: unreadable analog embeddings or charts ({_one_line(e)})"
            raise AnalogIndexError(msg) from None
        _check(directory, manifest, raw, len(blob))
        return cls(manifest=manifest, embeddings=_unit(raw.astype(np.float32)), charts=blob)

    def __len__(self) -> int:
        return len(self.manifest.symbols)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    def nearest(self, embeddings: npt.ArrayLike, k: int) -> list[list[Analog]]:
        """The k most similar rows (cosine, best first) for each query row of (n, dim) embeddings."""
        queries = np.asarray(embeddings, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            msg = f"analog query: expected (n, {self.dim}) embeddings, got {queries.shape}"
            raise ValueError(msg)
        k = min(max(int(k), 0), len(self))
        if k == 0:
            return [[] for _ in range(queries.shape[0])]
        similarity = _unit(queries) @ self._embeddings.T
        return [self._ranked(row, k) for row in similarity]

    def _ranked(self, similarity: Float32Array, k: int) -> list[Analog]:
        top = np.argpartition(-similarity, k - 1)[:k]
        top = top[np.lexsort((top, -similarity[top]))]  # best first, ties by row
        return [self.analog(int(i), float(similarity[i])) for i in top]

    def analog(self, row: int, similarity: float = 1.0) -> Analog:
        """The facts of one row (UnknownAnalogRow when there is no such row)."""
        self._check_row(row)
        m = self.manifest
        return Analog(
            row=row,
            symbol=m.symbols[row],
            ts=self._ts[row],
            forward_return=m.forward_return[row],
            patterns=m.patterns[row],
            similarity=similarity,
        )

    def embedding(self, row: int) -> Float32Array:
        """One row's unit embedding (float32)."""
        self._check_row(row)
        return np.array(self._embeddings[row], dtype=np.float32)

    def chart_png(self, row: int) -> bytes:
        """The PNG bytes of the row's chart (UnknownAnalogRow when there is no such row)."""
        self._check_row(row)
        offsets = self.manifest.chart_offsets
        return self._charts[offsets[row] : offsets[row + 1]]

    def _check_row(self, row: int) -> None:
        if isinstance(row, bool) or not isinstance(row, (int, np.integer)):
            msg = f"analog row must be an integer, got {row!r}"
            raise UnknownAnalogRow(msg)
        if not 0 <= row < len(self):
            msg = f"analog row {row} is outside the index (rows 0..{len(self) - 1})"
            raise UnknownAnalogRow(msg)


def sample_rows(count: int, cap: int, *, seed: int) -> npt.NDArray[np.int64]:
    """Which of `count` rows the index keeps: all when cap is 0 or enough, else `cap` drawn without
    replacement by a seeded generator (the same rows for the same count, cap and seed), in order."""
    if cap <= 0 or count <= cap:
        return np.arange(count, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(count, size=cap, replace=False)).astype(np.int64)


def png_bytes(image: npt.NDArray[np.uint8], *, compress_level: int = 9) -> bytes:
    """Plain PNG bytes of one HxWx3 uint8 chart (no text chunks: the index holds its facts)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def build_analog_index(
    *,
    embeddings: npt.ArrayLike,
    images: npt.NDArray[np.uint8],
    symbols: Sequence[str],
    ts: Sequence[int] | npt.NDArray[np.int64],
    forward_return: Sequence[float] | npt.NDArray[np.float64],
    patterns: Sequence[tuple[str, ...]],
    horizon_bars: int,
    spec_hash: str,
    compress_level: int = 9,
) -> dict[str, bytes]:
    """The index files (bundle-relative name -> bytes) of rows already chosen (see sample_rows):
    embeddings are stored unit length in float16, each image as PNG."""
    vectors = np.asarray(embeddings, dtype=np.float32)
    n = len(symbols)
    if vectors.ndim != 2 or vectors.shape[0] != n or images.shape[0] != n:
        msg = f"analogs: {n} rows but embeddings {vectors.shape} and images {images.shape}"
        raise ValueError(msg)
    if not (len(ts) == len(forward_return) == len(patterns) == n):
        msg = (
            f"analogs: column lengths differ ({n} symbols, {len(ts)} ts, {len(patterns)} patterns)"
        )
        raise ValueError(msg)
    if not np.isfinite(np.asarray(forward_return, dtype=np.float64)).all():
        msg = "analogs: every row needs a finite forward return (its horizon must lie inside the bars)"
        raise ValueError(msg)
    charts = [png_bytes(image, compress_level=compress_level) for image in images]
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in charts])]).astype(np.int64)
    manifest = AnalogManifest(
        horizon_bars=horizon_bars,
        spec_hash=spec_hash,
        dim=int(vectors.shape[1]),
        symbols=[str(s) for s in symbols],
        ts=[int(t) for t in ts],
        forward_return=[float(r) for r in forward_return],
        patterns=[tuple(str(p) for p in row) for row in patterns],
        chart_offsets=offsets.tolist(),
    )
    buf = io.BytesIO()
    np.save(buf, _unit(vectors).astype(np.float16), allow_pickle=False)
    return {
        INDEX_FILE: msgspec.json.encode(manifest),
        EMBEDDINGS_FILE: buf.getvalue(),
        CHARTS_FILE: b"".join(charts),
    }


def _unit(vectors: Float32Array) -> Float32Array:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    unit: Float32Array = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit


def _check(directory: Path, m: AnalogManifest, vectors: np.ndarray, chart_bytes: int) -> None:
    """Every column the same length, embeddings (rows, dim) finite floats, offsets inside charts.bin."""
    n = len(m.symbols)
    problem = ""
    if m.version != INDEX_VERSION:
        problem = f"index version {m.version}, this version reads {INDEX_VERSION}"
    elif not (len(m.ts) == len(m.forward_return) == len(m.patterns) == n):
        problem = f"column lengths differ ({n} symbols, {len(m.ts)} ts, {len(m.patterns)} patterns)"
    elif vectors.shape != (n, m.dim) or vectors.dtype.kind != "f":
        problem = f"embeddings are {vectors.dtype} {vectors.shape}, the index says ({n}, {m.dim})"
    elif not np.isfinite(vectors).all():
        problem = "embeddings hold NaN or infinite values"
    elif len(m.chart_offsets) != n + 1 or m.chart_offsets[-1] != chart_bytes:
        problem = f"chart offsets do not cover {Path(CHARTS_FILE).name} ({chart_bytes} bytes)"
    elif m.chart_offsets[0] != 0 or any(np.diff(m.chart_offsets) <= 0):
        problem = "chart offsets are not increasing"
    if problem:
        msg = f"{directory}: corrupt analog index, {problem}; rebuild the bundle"
        raise AnalogIndexError(msg)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
