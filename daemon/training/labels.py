"""Pattern labels of user bars from the TA-Lib detectors: one label per bar, on the bar that completes it.

TA-Lib runs once over each symbol's whole series (the same functions and signs as
vlm_engine.labels.patterns.detect_patterns); a bar where several configured patterns fire
gets the first in the configured order (LabelConfig.patterns is the priority).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import talib

from daemon.training.config import LabelConfig
from vlm_engine.labels.patterns import BY_NAME


def detector_labels(frame: pd.DataFrame, cfg: LabelConfig) -> pd.DataFrame:
    """A copy of a normalised bars frame with a `pattern` column ("" where no configured pattern fires)."""
    out = frame.reset_index(drop=True).copy()
    pattern = np.full(len(out), "", dtype=object)
    for _, rows in out.groupby("symbol", sort=False).indices.items():
        o, h, lo, c = (
            out[col].to_numpy(dtype=np.float64)[rows] for col in ("open", "high", "low", "close")
        )
        outputs: dict[str, np.ndarray] = {}
        mine = np.full(rows.size, "", dtype=object)
        for name in reversed(cfg.patterns):  # the first listed is written last: it wins
            spec = BY_NAME[name]
            if spec.function not in outputs:
                outputs[spec.function] = getattr(talib, spec.function)(o, h, lo, c)
            mine[np.sign(outputs[spec.function]) == spec.sign] = name
        pattern[rows] = mine
    out["pattern"] = pattern
    return out


def label_counts(frame: pd.DataFrame) -> dict[str, int]:
    """How many bars carry each label (the build's log and card)."""
    counts = frame["pattern"].value_counts()
    return {str(k): int(v) for k, v in counts.items() if k}
