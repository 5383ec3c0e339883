"""Chart rendering + CLIP scoring on a Ray cluster: Ray Data batch inference, one warm engine per actor.

The work is cut into shards of one symbol and a span of its bar closes (RayConfig.shard_bars bars
each); a shard is three small values, and the actor that takes it reads that symbol's bars from
the shared path itself, rebuilds the live BarStore's windows, renders and scores them. What comes
back per window is its key (symbol, bar close), p_up, pattern probabilities and embedding, which
become a PrecomputedVision: strategy's VisionModel answering from those rows, so the rest of
evaluate/backtest runs unchanged. Ray Data restarts a lost actor and re-runs its shards; rows are
keyed, and a key that comes back twice or never is an error, never a silent gap or double count.
CPU/GPU per actor come from RayConfig. A CLIP score is a function of its own window only (the
engine's batches are independent rows), so these scores equal the local run's.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import structlog
from tqdm import tqdm

from daemon.cluster.bars_input import BarsAt, symbol_windows
from daemon.cluster.config import RayConfig
from daemon.cluster.errors import ClusterError
from strategy.bars import BarStoreConfig, Window
from strategy.ml_scorer import VisionScores

log = structlog.get_logger("daemon.cluster")


class Shard(msgspec.Struct, frozen=True, kw_only=True):
    """One symbol's windows whose last bar closes in [start, stop) (epoch s)."""

    symbol: str
    start: int
    stop: int
    bars: int


def plan_shards(frame: pd.DataFrame, shard_bars: int) -> list[Shard]:
    """Shards of about shard_bars bars per symbol, symbols in first-seen order, time inside each."""
    from vlm_engine.dataset.bars import ts_seconds

    seconds = ts_seconds(frame)
    symbols = frame["symbol"].astype(str).to_numpy()
    shards: list[Shard] = []
    for symbol in dict.fromkeys(symbols.tolist()):
        times = np.unique(seconds[symbols == symbol])
        for i in range(0, times.size, shard_bars):
            stop = int(times[i + shard_bars]) if i + shard_bars < times.size else int(times[-1]) + 1
            shards.append(
                Shard(
                    symbol=symbol,
                    start=int(times[i]),
                    stop=stop,
                    bars=min(shard_bars, times.size - i),
                )
            )
    return shards


class ShardScorer:
    """A Ray Data actor: the bundle's CLIP engine loaded once, then any number of shards."""

    def __init__(self, *, bundle: str, bars: str, store: bytes, runtime: str = "torch") -> None:
        from daemon.model.loader import load_engine
        from daemon.model.vision import ClipVision
        from vlm_engine.infer import InferenceConfig

        # The runtime the driver settled (never "auto": a measured choice could differ per node,
        # and ONNX INT8 scores differ from torch's, so the run would not equal a local one).
        inference = InferenceConfig(runtime=runtime)  # type: ignore[arg-type]  # a RuntimeName
        engine = load_engine(Path(bundle), spec_hash=None, inference=inference)
        self.vision = ClipVision(engine=engine)
        self.source = BarsAt(path=bars)
        self.store = msgspec.json.decode(store, type=BarStoreConfig)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        windows: list[Window] = []
        for symbol, start, stop in zip(batch["symbol"], batch["start"], batch["stop"], strict=True):
            shard = symbol_windows(
                self.source, str(symbol), self.store, start=int(start), stop=int(stop)
            )
            log.info("ray.shard_started", symbol=str(symbol), start=int(start), windows=len(shard))
            windows += shard
        scores = self.vision.score_windows(windows)  # no windows: empty arrays of the right width
        return {
            "symbol": np.asarray([w.symbol for w in windows], dtype=object),
            "ts": np.asarray([int(w.timestamps[-1]) for w in windows], dtype=np.int64),
            "p_up": scores.p_up,
            "pattern_probs": scores.pattern_probs,
            "embeddings": scores.embeddings,
            "classes": np.asarray(["\x1f".join(scores.pattern_names)] * len(windows), dtype=object),
        }


class PrecomputedVision:
    """strategy's VisionModel over CLIP rows scored elsewhere, looked up by (symbol, bar close)."""

    def __init__(
        self,
        *,
        keys: Sequence[tuple[str, int]],
        p_up: np.ndarray,
        pattern_probs: np.ndarray,
        embeddings: np.ndarray,
        classes: tuple[str, ...],
    ) -> None:
        self.rows = {k: i for i, k in enumerate(keys)}
        if len(self.rows) != len(keys):
            twice = next(k for k, n in Counter(keys).items() if n > 1)
            msg = f"cluster scoring returned {twice[0]} at {twice[1]} twice: a shard ran twice into the result"
            raise ClusterError(msg)
        self.p_up, self.pattern_probs, self.embeddings = p_up, pattern_probs, embeddings
        self.classes = classes

    def score_windows(self, windows: Sequence[Window]) -> VisionScores:
        try:
            index = [self.rows[(w.symbol, int(w.timestamps[-1]))] for w in windows]
        except KeyError as e:
            msg = f"cluster scoring returned no CLIP row for {e.args[0]}: a shard lost rows"
            raise ClusterError(msg) from None
        return VisionScores(
            p_up=self.p_up[index],
            pattern_probs=self.pattern_probs[index],
            pattern_names=self.classes,
            embeddings=self.embeddings[index],
        )


def _actors(ray: Any, cfg: RayConfig, shards: int) -> int:
    if cfg.actors:
        return min(cfg.actors, shards)
    if cfg.resources:  # as many as the nodes that have the resources can hold
        total = ray.cluster_resources()
        fits = min(int(total.get(k, 0.0) // v) for k, v in cfg.resources.items() if v > 0)
        return max(1, min(shards, fits))
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    per = cfg.cpus_per_actor or 1.0
    return max(1, min(shards, int(cpus // per)))


def cluster_clip_scores(
    ray: Any,
    *,
    bundle: Path,
    bars: Path,
    frame: pd.DataFrame,
    store: BarStoreConfig,
    cfg: RayConfig,
    progress: bool = True,
    runtime: str = "torch",
) -> PrecomputedVision:
    """Every window's CLIP scores over the cluster (see the module docstring), as a VisionModel."""
    import ray.data as ray_data

    shards = plan_shards(frame, cfg.shard_bars)
    context = ray_data.DataContext.get_current()
    context.enable_progress_bars = False  # one bar: ours, below
    context.execution_options.preserve_order = True
    actors = _actors(ray, cfg, len(shards))
    items = [msgspec.to_builtins(s) for s in shards]
    data = ray_data.from_items(items, override_num_blocks=len(items)).map_batches(
        ShardScorer,
        fn_constructor_kwargs={
            "bundle": str(bundle.resolve()),
            "bars": str(bars.resolve()),
            "store": msgspec.json.encode(store),
            "runtime": runtime,
        },
        batch_size=1,
        compute=ray_data.ActorPoolStrategy(size=actors),
        num_cpus=cfg.cpus_per_actor,
        num_gpus=cfg.gpus_per_actor,
        resources=dict(cfg.resources) or None,
    )  # Ray Data restarts a dead actor and re-runs its shard (max_restarts=-1 by default)
    keys: list[tuple[str, int]] = []
    p_up: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    embeddings: list[np.ndarray] = []
    classes: tuple[str, ...] = ()
    total = sum(s.bars for s in shards)
    with tqdm(
        total=total, desc="render+score", unit="chart", file=sys.stderr, disable=not progress
    ) as bar:
        for block in data.iter_batches(batch_size=None, batch_format="numpy"):
            n = len(block["ts"])
            if n == 0:
                continue
            keys += list(zip(block["symbol"].tolist(), block["ts"].tolist(), strict=True))
            p_up.append(np.asarray(block["p_up"], dtype=np.float64))
            probs.append(np.asarray(block["pattern_probs"], dtype=np.float64))
            embeddings.append(np.asarray(block["embeddings"], dtype=np.float64))
            classes = tuple(str(block["classes"][0]).split("\x1f"))
            bar.update(n)
    log.info("ray.clip_scored", shards=len(shards), actors=actors, rows=len(keys))
    if not keys:
        msg = f"{bars}: no window to score on the cluster (too few bars per symbol for the chart window)"
        raise ClusterError(msg)
    return PrecomputedVision(
        keys=keys,
        p_up=np.concatenate(p_up),
        pattern_probs=np.vstack(probs),
        embeddings=np.vstack(embeddings),
        classes=classes,
    )
