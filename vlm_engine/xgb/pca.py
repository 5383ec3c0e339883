"""PCA fitted on training embeddings (SVD), to feed a few CLIP embedding components to XGBoost."""

from __future__ import annotations

import msgspec
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class PcaParams(msgspec.Struct, frozen=True, kw_only=True):
    """mean (d,) and components (k, d) as nested tuples so they round-trip through JSON."""

    mean: tuple[float, ...]
    components: tuple[tuple[float, ...], ...]
    explained_variance_ratio: tuple[float, ...] = ()

    def transform(self, x: npt.ArrayLike) -> FloatArray:
        xa = np.asarray(x, dtype=np.float64)
        mean = np.asarray(self.mean)
        if xa.ndim != 2 or xa.shape[1] != mean.shape[0]:
            msg = f"pca expects rows of {mean.shape[0]} values, got shape {xa.shape}"
            raise ValueError(msg)
        return np.asarray((xa - mean) @ np.asarray(self.components).T, dtype=np.float64)


def fit_pca(x: npt.ArrayLike, n_components: int) -> PcaParams:
    """Principal axes of the rows of x; signs fixed so each component's largest loading is positive."""
    xa = np.asarray(x, dtype=np.float64)
    if xa.ndim != 2 or xa.shape[0] < 2:
        msg = f"pca needs at least 2 rows, got shape {xa.shape}"
        raise ValueError(msg)
    k = min(n_components, xa.shape[0], xa.shape[1])
    mean = xa.mean(axis=0)
    _, s, vt = np.linalg.svd(xa - mean, full_matrices=False)
    comps = vt[:k]
    signs = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
    comps = comps * signs[:, None]
    var = s**2
    ratio = var[:k] / var.sum() if var.sum() > 0 else np.zeros(k)
    return PcaParams(
        mean=tuple(mean.tolist()),
        components=tuple(tuple(r) for r in comps.tolist()),
        explained_variance_ratio=tuple(ratio.tolist()),
    )
