"""A trained XGBoost direction model: booster (native JSON) + feature names + Platt calibration.

xgboost (and the scipy it pulls in, ~0.3 s) is imported where a booster is built or read, not at
import: the daemon imports this module on its way to `daemon.ready`, before any bundle is loaded.
"""

from __future__ import annotations

import json
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

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.meta.feature_names

    def _matrix(self, x: npt.ArrayLike) -> xgb.DMatrix:
        import xgboost as xgb  # here, not at import: see the module docstring

        xa = np.asarray(x, dtype=np.float32)
        self._matrix_shape(xa)
        return xgb.DMatrix(
            xa, feature_names=list(self.meta.feature_names), missing=np.nan, nthread=1
        )

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
        return np.asarray(
            self.booster.inplace_predict(np.asarray(xa, dtype=np.float32), missing=np.nan),
            dtype=np.float64,
        )

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
            self.booster.predict(self._matrix(x), pred_contribs=True, approx_contribs=approximate),
            dtype=np.float64,
        )

    def explain(
        self, x: npt.ArrayLike, top: int = 5, *, approximate: bool = False
    ) -> list[list[tuple[str, float]]]:
        """The top features (by |contribution|) of each row, signed toward up (+) or down (-)."""
        contrib = self.contributions(x, approximate=approximate)[:, :-1]
        names = self.meta.feature_names
        order = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :top]
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
