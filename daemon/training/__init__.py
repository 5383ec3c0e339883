"""`vlmtrader model build` / `model bootstrap` as a library: one pipeline, two sources of labelled bars.

config    BuildConfig (the pipeline), BootstrapConfig (+ the simulated market), quick configs
sources   user_bars (files + TA-Lib detector labels), sim_bars (planted labels)
labels    detector_labels: one label per bar, configured priority
tabular   fit_tabular: XGBoost (+ technical-only twin) and fusion on the part CLIP never saw
pipeline  build (time split, stages, resume, publish), bootstrap, build_from_bars
"""

from daemon.training.config import (
    DEFAULT_SPEC,
    BootstrapConfig,
    BuildConfig,
    LabelConfig,
    SplitConfig,
    TabularConfig,
    default_horizon,
    quick_build_config,
    quick_config,
)
from daemon.training.labels import detector_labels
from daemon.training.pipeline import (
    BuildInputError,
    BuildResult,
    ClipOnRay,
    TimeSplit,
    bootstrap,
    build,
    build_from_bars,
    time_split,
)
from daemon.training.sources import SIM_START, sim_bars, user_bars
from daemon.training.tabular import combine, fit_fusion, fit_tabular, select_fusion

__all__ = [
    "DEFAULT_SPEC",
    "SIM_START",
    "BootstrapConfig",
    "BuildConfig",
    "BuildInputError",
    "BuildResult",
    "ClipOnRay",
    "LabelConfig",
    "SplitConfig",
    "TabularConfig",
    "TimeSplit",
    "bootstrap",
    "build",
    "build_from_bars",
    "combine",
    "default_horizon",
    "detector_labels",
    "fit_fusion",
    "fit_tabular",
    "quick_build_config",
    "quick_config",
    "select_fusion",
    "sim_bars",
    "time_split",
    "user_bars",
]
