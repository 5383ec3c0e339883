"""A trained XGBoost direction model: booster (native JSON) + feature names + Platt calibration.

xgboost (and the scipy it pulls in, ~0.3 s) is imported where a booster is built or read, not at
import: the daemon imports this module on its way to `daemon.ready`, before any bundle is loaded.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import xgboost as xgb

from vlm_engine.metrics import LogisticParams, logit
from vlm_engine.xgb.errors import XgbModelError

FloatArray = npt.NDArray[np.float64]

MODEL_FILE = "model.json"
META_FILE = "meta.json"


class XgbMeta(msgspec.Struct, frozen=True, kw_only=True):
    """Everything next to the booster that scoring and monitoring need; stored as meta.json."""

    feature_names: tuple[str, ...]
    calibration: LogisticParams | None = None
    horizon_bars: int = 5
    bar_seconds: int = 60
    best_iteration: int = 0
    feature_config: dict[str, Any] = msgspec.field(default_factory=dict)
    metrics: dict[str, float] = msgspec.field(default_factory=dict)
    importance: dict[str, float] = msgspec.field(default_factory=dict)
    drift_reference: dict[str, Any] = msgspec.field(default_factory=dict)
    extra: dict[str, Any] = msgspec.field(default_factory=dict)


class XgbModel:
    """Predicts calibrated P(up) and explains each prediction with XGBoost's pred_contribs."""

    def __init__(self, *, booster: xgb.Booster, meta: XgbMeta) -> None:
        self.booster = booster
        self.meta = meta
        self.booster.set_param({"nthread": 1})
        self._dense = _dense_predictor(booster)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.meta.feature_names

    def _matrix(self, x: npt.ArrayLike) -> xgb.DMatrix:
        import xgboost as xgb  # here, not at import: see the module docstring

        xa = np.asarray(x, dtype=np.float32)
        self._matrix_shape(xa)
        # Without feature names (columns are matched by position, as inplace_predict matches
        # them): naming 46 columns and checking them against the booster's on every call was
        # 0.1 ms of a 10-row explanation, and the names are the meta's own.
        return xgb.DMatrix(xa, missing=np.nan, nthread=1)

    def _matrix_shape(self, xa: npt.NDArray[Any]) -> None:
        if xa.ndim != 2 or xa.shape[1] != len(self.meta.feature_names):
            msg = (
                f"xgb model expects {len(self.meta.feature_names)} features per row, "
                f"got shape {xa.shape}"
            )
            raise XgbModelError(msg)

    def predict_raw(self, x: npt.ArrayLike) -> FloatArray:
        """The booster's probability before calibration."""
        xa = np.asarray(x)
        if xa.shape[0] == 0:
            return np.empty(0)
        self._matrix_shape(xa)
        rows = np.ascontiguousarray(xa, dtype=np.float32)
        if self._dense is not None:
            return np.asarray(self._dense(rows), dtype=np.float64)
        return np.asarray(self.booster.inplace_predict(rows, missing=np.nan), dtype=np.float64)

    def predict(self, x: npt.ArrayLike) -> FloatArray:
        """Calibrated P(up) per row."""
        raw = self.predict_raw(x)
        if self.meta.calibration is None or raw.size == 0:
            return raw
        return self.meta.calibration.predict(logit(raw))

    def contributions(self, x: npt.ArrayLike, *, approximate: bool = False) -> FloatArray:
        """Per-feature contributions to the margin (log-odds), last column the bias (pred_contribs).

        Exact TreeSHAP by default; approximate uses XGBoost's approx_contribs (each split's
        change in the node value credited to its feature), about 5x faster and also summing
        to the margin, for explanations on the live path."""
        return np.asarray(
            self.booster.predict(
                self._matrix(x),
                pred_contribs=True,
                approx_contribs=approximate,
                validate_features=False,
            ),
            dtype=np.float64,
        )

    def explain(
        self, x: npt.ArrayLike, top: int = 5, *, approximate: bool = False
    ) -> list[list[tuple[str, float]]]:
        """The top features (by |contribution|) of each row, signed toward up (+) or down (-)."""
        contrib = self.contributions(x, approximate=approximate)[:, :-1]
        names = self.meta.feature_names
        order = top_by_magnitude(contrib, top)
        picked = np.take_along_axis(contrib, order, axis=1)
        return [
            [(names[i], v) for i, v in zip(idx, vals, strict=True) if v != 0]
            for idx, vals in zip(order.tolist(), picked.tolist(), strict=True)
        ]

    def importance(self, importance_type: str = "gain") -> dict[str, float]:
        """Feature importance from the booster (features never used are absent)."""
        score = self.booster.get_score(importance_type=importance_type)
        return {k: float(v) if not isinstance(v, list) else float(sum(v)) for k, v in score.items()}

    # ---- files ------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write model.json (XGBoost native JSON) and meta.json into directory."""
        import xgboost as xgb  # here, not at import: see the module docstring

        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self.booster.save_model(str(directory / MODEL_FILE))
            (directory / META_FILE).write_bytes(msgspec.json.format(msgspec.json.encode(self.meta)))
        except (OSError, xgb.core.XGBoostError) as e:
            msg = f"{directory}: cannot save xgb model ({e})"
            raise XgbModelError(msg) from e

    @classmethod
    def load(cls, directory: Path) -> XgbModel:
        """Read a model saved by save(); errors name the file."""
        import xgboost as xgb  # here, not at import: see the module docstring

        directory = Path(directory)
        meta_path = directory / META_FILE
        model_path = directory / MODEL_FILE
        try:
            meta = msgspec.json.decode(meta_path.read_bytes(), type=XgbMeta)
        except FileNotFoundError:
            msg = f"{meta_path}: missing (not an xgb model directory)"
            raise XgbModelError(msg) from None
        except (OSError, msgspec.DecodeError) as e:
            msg = f"{meta_path}: unreadable ({e})"
            raise XgbModelError(msg) from None
        booster = xgb.Booster()
        try:
            json.loads(model_path.read_text())
            booster.load_model(str(model_path))
        except FileNotFoundError:
            msg = f"{model_path}: missing"
            raise XgbModelError(msg) from None
        except (OSError, ValueError, xgb.core.XGBoostError) as e:
            msg = f"{model_path}: not an XGBoost JSON model ({str(e).splitlines()[0]})"
            raise XgbModelError(msg) from None
        if booster.num_features() != len(meta.feature_names):
            msg = (
                f"{model_path}: booster has {booster.num_features()} features, "
                f"meta.json names {len(meta.feature_names)}"
            )
            raise XgbModelError(msg)
        return cls(booster=booster, meta=meta)


def top_by_magnitude(values: FloatArray, top: int) -> npt.NDArray[np.intp]:
    """Per row, the columns of the `top` largest |values|, largest first, ties to the lower
    column: np.argsort(-np.abs(values), axis=1, kind="stable")[:, :top].

    Why by hand: a few argmax passes (argmax takes the first of equal maxima, as the stable sort
    orders them) instead of sorting all columns: a third of the time at 100 rows x 46 columns.
    A NaN sorts differently in the two, so values with one take the sort."""
    k = min(max(top, 0), values.shape[1])
    magnitude = np.abs(values)
    if k * 4 > values.shape[1] or not np.isfinite(magnitude).all():
        return np.argsort(-magnitude, axis=1, kind="stable")[:, :k]
    rows = np.arange(values.shape[0])
    order = np.empty((values.shape[0], k), dtype=np.intp)
    for j in range(k):
        best = magnitude.argmax(axis=1)
        order[:, j] = best
        magnitude[rows, best] = -1.0  # below every |value|: taken
    return order


# inplace_predict's arguments for a plain prediction (predict_type "value", all trees, NaN missing)
_PREDICT_ARGS = (
    b'{"type": 0, "training": false, "iteration_begin": 0, "iteration_end": 0, '
    b'"missing": NaN, "strict_shape": false, "cache_id": 0}'
)


def _dense_predictor(
    booster: xgb.Booster,
) -> Callable[[npt.NDArray[np.float32]], FloatArray] | None:
    """Booster.inplace_predict for a C-contiguous float32 matrix as one call of XGBoost's C API
    (XGBoosterPredictFromDense, the call inplace_predict makes for a NumPy array), or None when
    this xgboost does not expose it (inplace_predict then).

    Why by hand: inplace_predict's Python around that call (type dispatch over pandas, arrow,
    polars, cupy, a JSON dump per call, a class built per result) took 50-65 us of the ~90 us of
    a 10-row prediction; the C call and its result are the same (tests/vlm_engine/test_xgb.py)."""
    try:
        from xgboost import core

        lib, check, ulong = core._LIB, core._check_call, ctypes.c_uint64  # bst_ulong
        predict = lib.XGBoosterPredictFromDense
    except (ImportError, AttributeError):
        return None

    def dense(rows: npt.NDArray[np.float32]) -> FloatArray:
        n, k = rows.shape
        interface = (
            f'{{"data": [{rows.ctypes.data}, true], "shape": [{n}, {k}], "strides": null, '
            f'"typestr": "<f4", "version": 3}}'
        ).encode()
        shape = ctypes.POINTER(ulong)()
        dims = ulong()
        preds = ctypes.POINTER(ctypes.c_float)()
        check(
            predict(
                booster.handle,
                interface,
                _PREDICT_ARGS,
                None,
                ctypes.byref(shape),
                ctypes.byref(dims),
                ctypes.byref(preds),
            )
        )
        if dims.value != 1 or shape[0] != n:  # not one P(up) per row: XGBoost's own reading
            return np.asarray(booster.inplace_predict(rows, missing=np.nan), dtype=np.float64)
        out = np.empty(n, dtype=np.float32)
        ctypes.memmove(out.ctypes.data, preds, 4 * n)
        return np.asarray(out, dtype=np.float64)

    return dense
