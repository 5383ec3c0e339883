"""One research command's use of the cluster: its session, its task map, its CLIP scoring."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from daemon.cluster.bars_input import BarsAt
from daemon.cluster.clip_scores import PrecomputedVision, cluster_clip_scores
from daemon.cluster.config import RayConfig
from daemon.cluster.session import ray_session
from daemon.cluster.tasks import RayTaskMap
from strategy.bars import BarStoreConfig


class ClusterRun:
    """A connected cluster for one command over the bars at `bars` (a path every node sees)."""

    def __init__(self, *, ray: Any, cfg: RayConfig, bars: Path, progress: bool) -> None:
        self.ray, self.cfg, self.bars, self.progress = ray, cfg, bars.resolve(), progress
        self.task_map = RayTaskMap(
            ray=ray,
            max_retries=cfg.max_retries,
            progress=progress,
            from_path={"batches": BarsAt(path=str(self.bars))},
        )

    def clip_scores(
        self, *, bundle: Path, frame: pd.DataFrame, store: BarStoreConfig, runtime: str
    ) -> PrecomputedVision:
        """Every window's CLIP scores, rendered and scored by the cluster's actors on the CLIP
        runtime the driver settled (torch, onnx or onnx-int8)."""
        return cluster_clip_scores(
            self.ray,
            bundle=bundle,
            bars=self.bars,
            frame=frame,
            store=store,
            cfg=self.cfg,
            progress=self.progress,
            runtime=runtime,
        )


@contextmanager
def cluster_run(
    cfg: RayConfig | None, *, bars: Path, progress: bool, origin: str = "--ray"
) -> Iterator[ClusterRun | None]:
    """A ClusterRun for the command's duration; None (and no Ray import) when cfg is None.
    origin: where cfg's address came from, for its errors (daemon.cluster.config.ray_origin)."""
    if cfg is None:
        yield None
        return
    with ray_session(cfg, origin=origin) as ray:
        yield ClusterRun(ray=ray, cfg=cfg, bars=bars, progress=progress)
