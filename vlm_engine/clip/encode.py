"""Batched, gradient-free encoding of chart images and prompt texts into normalised CLIP embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from vlm_engine.clip.data import PromptSet
from vlm_engine.clip.model import ClipParts

FloatArray = npt.NDArray[np.float32]


@torch.no_grad()
def encode_images(
    parts: ClipParts,
    images: npt.NDArray[np.uint8],
    *,
    batch_size: int = 128,
    device: torch.device | None = None,
) -> FloatArray:
    """(N, D) float32 image embeddings, unit length."""
    device = device or next(parts.model.parameters()).device
    was_training = parts.model.training
    parts.model.eval()
    chunks = []
    for start in range(0, images.shape[0], batch_size):
        pixels = parts.preprocess(images[start : start + batch_size], device=device)
        chunks.append(parts.image_features(pixels).cpu().numpy())
    parts.model.train(was_training)
    return np.concatenate(chunks).astype(np.float32)


@torch.no_grad()
def encode_texts(
    parts: ClipParts, texts: Sequence[str], *, device: torch.device | None = None
) -> FloatArray:
    """(T, D) float32 text embeddings, unit length."""
    device = device or next(parts.model.parameters()).device
    was_training = parts.model.training
    parts.model.eval()
    features = parts.text_features(parts.tokenize(texts, device)).cpu().numpy()
    parts.model.train(was_training)
    return features.astype(np.float32)


def class_embeddings(parts: ClipParts, groups: Sequence[Sequence[str]]) -> FloatArray:
    """One unit vector per group of prompts: the normalised mean of the group's text embeddings."""
    flat = [t for g in groups for t in g]
    features = encode_texts(parts, flat)
    out = []
    start = 0
    for group in groups:
        mean = features[start : start + len(group)].mean(axis=0)
        out.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        start += len(group)
    return np.stack(out).astype(np.float32)


def prompt_embeddings(parts: ClipParts, prompts: PromptSet) -> tuple[FloatArray, FloatArray]:
    """(K, D) pattern class embeddings and (2, D) direction embeddings (row 0 down, row 1 up)."""
    patterns = class_embeddings(parts, list(prompts.patterns.values()))
    direction = class_embeddings(parts, [prompts.down, prompts.up])
    return patterns, direction


def logit_scale(parts: ClipParts) -> float:
    """The model's learned logit scale (exp of the stored log scale), capped at 100 as in CLIP."""
    return float(min(parts.model.logit_scale.detach().exp().item(), 100.0))
