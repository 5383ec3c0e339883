"""The build's analog step: the training charts, embedded by the bundle's own fine-tuned image tower,
stored in the bundle with their facts and PNGs (vlm_engine/clip/analogs.py holds the format)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import structlog

from daemon.training.config import AnalogConfig
from vlm_engine.bundle import ModelCard, add_to_bundle, load_bundle
from vlm_engine.clip.analogs import ANALOG_DIR, build_analog_index, sample_rows
from vlm_engine.clip.data import NO_PATTERN, ClipSamples
from vlm_engine.clip.errors import ClipDataError

log = structlog.get_logger("daemon.training")

STAGE = "analogs"


def add_analogs(bundle: Path, train: ClipSamples, cfg: AnalogConfig) -> ModelCard | None:
    """Embed (up to cfg.max_rows of) the training charts with the bundle's CLIP and add the index to
    the bundle; the card's stages["analogs"] says how many rows, how they were drawn, and their bytes.
    None (and no index) when cfg.max_rows is 0."""
    if cfg.max_rows == 0:
        log.info("analogs.skipped", reason="analogs.max_rows is 0")
        return None
    origins = train.origins
    if origins is None:
        msg = "analogs: the training charts carry no origins (symbol, time, forward return)"
        raise ClipDataError(msg)
    from vlm_engine.clip.encode import encode_images

    started = time.perf_counter()
    rows = sample_rows(len(train), cfg.max_rows, seed=cfg.seed)
    images = train.images[rows]
    clip = load_bundle(bundle)
    embeddings = encode_images(clip.parts, images, batch_size=64)
    files = build_analog_index(
        embeddings=embeddings,
        images=images,
        symbols=[origins.symbols[i] for i in rows.tolist()],
        ts=origins.ts[rows],
        forward_return=origins.forward_return[rows],
        patterns=[_labels(train.patterns[i]) for i in rows.tolist()],
        horizon_bars=origins.horizon,
        spec_hash=clip.card.spec_hash,
        compress_level=cfg.compress_level,
    )
    chart_bytes = len(files[f"{ANALOG_DIR}/charts.bin"])
    seconds = time.perf_counter() - started
    stage: dict[str, Any] = {
        "split": "train",
        "rows": int(rows.size),
        "training_charts": len(train),
        "max_rows": cfg.max_rows,
        "sampled": bool(rows.size < len(train)),
        "seed": cfg.seed,
        "horizon_bars": origins.horizon,
        "dim": int(embeddings.shape[1]),
        "embedding_dtype": "float16",
        "chart_bytes": chart_bytes,
        "bytes_per_chart": round(chart_bytes / max(int(rows.size), 1), 1),
        "total_bytes": sum(len(v) for v in files.values()),
        "seconds": round(seconds, 2),
    }
    card = add_to_bundle(bundle, files=files, stages={STAGE: stage})
    log.info("analogs.built", bundle_id=card.bundle_id, **stage)
    return card


def _labels(pattern: str) -> tuple[str, ...]:
    return () if pattern in ("", NO_PATTERN) else (pattern,)


__all__ = ["STAGE", "add_analogs"]
