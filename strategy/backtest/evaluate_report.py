"""What `evaluate` reports about predictive power: per-model metrics with bootstrap intervals, paired
differences, the verdict sentence, and the predictions table they are all recomputable from.

Follows EVALUATION.md: every model is scored on the same rows; intervals are 95% moving-block
bootstrap over time (symbols pooled); a difference is never called a gain when its interval holds 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from vlm_engine.metrics import BootstrapConfig, block_bootstrap, summary, unmeasured
from vlm_engine.metrics import auc as auc_of

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# (a, b) pairs whose AUC difference a - b is reported when both models are there
DIFFERENCES = (("fused", "xgb_technical"), ("clip", "xgb_technical"), ("xgb", "xgb_technical"))


def model_metrics(
    y: FloatArray,
    ts: IntArray,
    fold: IntArray,
    probs: Mapping[str, FloatArray],
    *,
    horizon_bars: int,
    bootstrap: BootstrapConfig,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]], dict[str, Any]]:
    """model_metrics[model], differences["a - b"] and the bootstrap settings, all on the given rows."""
    pairs = [(a, b) for a, b in DIFFERENCES if a in probs and b in probs]
    boot = block_bootstrap(
        ts, y, probs, block_bars=bootstrap.block_for(horizon_bars), config=bootstrap, pairs=pairs
    )
    folds = sorted(set(fold.tolist()))
    out: dict[str, dict[str, Any]] = {}
    for m, p in probs.items():
        s = summary(y, p)
        ci = boot.auc[m]
        out[m] = {
            "auc": s["auc"],
            "auc_ci_low": ci.low,
            "auc_ci_high": ci.high,
            "brier": s["brier"],
            "ece": s["ece"],
            "log_loss": s["log_loss"],
            "hit_rate": s["hit_rate"],
            "n": int(s["n"]),
            "unmeasured": unmeasured(y) or "",
            "fold_auc": [auc_of(y[fold == k], p[fold == k]) for k in folds],
        }
    differences = {
        name: {"diff": d.value, "ci_low": d.low, "ci_high": d.high}
        for name, d in boot.differences.items()
    }
    settings = {
        "block_bars": boot.block_bars,
        "resamples": boot.resamples,
        "confidence": boot.confidence,
        "seed": bootstrap.seed,
        "folds": folds,
    }
    return out, differences, settings


def _auc_text(name: str, m: Mapping[str, Any]) -> str:
    if m.get("unmeasured"):
        return f"{name} AUC unmeasured ({m['unmeasured']})"
    return f"{name} AUC {m['auc']:.3f} [{m['auc_ci_low']:.3f}, {m['auc_ci_high']:.3f}]"


def _signed(d: Mapping[str, float]) -> str:
    return f"{d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"


def _holds(low: float, high: float, value: float) -> bool:
    """The interval holds value (an unknown interval holds everything)."""
    return not (np.isfinite(low) and np.isfinite(high)) or low <= value <= high


def verdict(metrics: Mapping[str, Mapping[str, Any]], differences: Mapping[str, Any]) -> str:
    """One sentence from the intervals: is there an edge, and does CLIP add anything over the
    technical model. About fused when CLIP is there, else about xgb."""
    lead = "fused" if "clip" in metrics and "fused" in metrics else "xgb"
    m = metrics[lead]
    if m.get("unmeasured"):
        return f"no verdict: {_auc_text(lead, m)}"
    if _holds(m["auc_ci_low"], m["auc_ci_high"], 0.5):
        text = f"no edge: {_auc_text(lead, m)} holds 0.5"
    elif m["auc_ci_high"] < 0.5:
        text = f"no edge: {_auc_text(lead, m)} is below 0.5 (worse than chance; do not trade it)"
    else:
        text = f"edge: {_auc_text(lead, m)}"
    fused = metrics.get("fused")
    fused_holds = fused is not None and _holds(fused["auc_ci_low"], fused["auc_ci_high"], 0.5)
    if lead != "fused" and fused_holds and not text.startswith("no edge"):
        text += f"; no edge once fused: {_auc_text('fused', metrics['fused'])} holds 0.5"
    clip = differences.get("fused - xgb_technical")
    if clip is not None:
        if _holds(clip["ci_low"], clip["ci_high"], 0.0):
            how = "not shown to help"
        elif clip["ci_low"] > 0:
            how = "shown to help"
        else:
            how = "shown to hurt"
        text += f"; CLIP adds {_signed(clip)} over the technical model ({how})"
    return text


def predictions_frame(
    symbols: Sequence[str],
    ts: IntArray,
    fold: IntArray,
    y: FloatArray,
    probs: Mapping[str, FloatArray],
    raw: Mapping[str, FloatArray],
) -> pd.DataFrame:
    """symbol, ts (UTC), fold, y, then p_<model> and p_<model>_raw per model."""
    frame: dict[str, Any] = {
        "symbol": list(symbols),
        "ts": pd.to_datetime(np.asarray(ts, dtype=np.int64), unit="s", utc=True),
        "fold": np.asarray(fold, dtype=np.int64),
        "y": np.asarray(y).astype(np.int64),
    }
    for m, p in probs.items():
        frame[f"p_{m}"] = p
        frame[f"p_{m}_raw"] = raw.get(m, p)
    return pd.DataFrame(frame)
