"""What a slot serves: an ActiveModel (a scorer for windows, and the LoadedBundle behind it when
there is one), from a bundle directory (load_active) or the TA-Lib rules (rules_model)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec
import structlog

from daemon.errors import InputError
from daemon.model.loader import (
    BundleUnusable,
    LoadedBundle,
    bundle_failure,
    check_bar_size,
    check_windows,
    load_bundle,
)
from strategy.bars import BarStoreConfig
from strategy.fusion import FusionConfig
from strategy.ml_scorer import ScorerMode
from strategy.rule_scorer import RuleScorer, RuleScorerConfig
from strategy.scoring import Scorer

if TYPE_CHECKING:  # torch loads only when a bundle does
    from vlm_engine.infer.engine import AutoRule, InferenceConfig, RuntimeName

log = structlog.get_logger("daemon.model")

RULES_MIN_BARS = 8  # the TA-Lib rule scorer reads patterns of a few bars


class LoadOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How a bundle becomes the served scorer: what it trades on, where CLIP runs, what it must fit.

    fusion (when set) replaces the bundle's fitted fusion; bars (the daemon's windows) refuses a
    bundle that needs longer windows or was trained on another bar size. auto_rule: how runtime
    auto resolves, timed at load (the daemon) or by a fixed order, untimed (research runs)."""

    mode: ScorerMode = "fused"
    fusion: FusionConfig | None = None
    spec_hash: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0
    workers: int = 0
    runtime: RuntimeName = "torch"
    auto_rule: AutoRule = "timed"
    bars: BarStoreConfig | None = None


class ActiveModel(msgspec.Struct, frozen=True, kw_only=True):
    """What a slot serves now: a scorer for windows and, when a bundle serves, that bundle (its CLIP
    engine scores chart PNGs). Read once per batch, so a swap never splits one."""

    scorer: Scorer
    bar_seconds: int
    min_bars: int
    bundle: LoadedBundle | None = None

    @property
    def bundle_id(self) -> str | None:
        return self.bundle.bundle_id if self.bundle is not None else None


def rules_model(config: RuleScorerConfig, *, bar_seconds: int) -> ActiveModel:
    """The TA-Lib rule scorer as what a slot serves (no bundle, so no chart PNGs)."""
    return ActiveModel(
        scorer=RuleScorer(config=config), bar_seconds=bar_seconds, min_bars=RULES_MIN_BARS
    )


def inference_config(options: LoadOptions) -> InferenceConfig:
    """Where and on which runtime CLIP runs for these load options."""
    from vlm_engine.infer import InferenceConfig

    return InferenceConfig(
        device=options.device,
        threads=options.threads,
        workers=options.workers,
        runtime=options.runtime,
        auto_rule=options.auto_rule,
    )


def load_active(path: Path, options: LoadOptions) -> ActiveModel:
    """Load, validate and warm a bundle into the scorer it serves (BundleUnusable, one line, if not)."""
    path = Path(path)
    inference = inference_config(options)
    try:
        bundle = load_bundle(path, spec_hash=options.spec_hash or None, inference=inference)
        if options.bars is not None:
            check_windows(bundle, options.bars)
            check_bar_size(bundle, options.bars)
        scorer = bundle.scorer(mode=options.mode, fusion=options.fusion)
    except InputError:
        raise
    except ValueError as e:  # a mode the bundle cannot serve, a fusion it cannot apply
        msg = f"{path}: {' '.join(str(e).split())}"
        raise BundleUnusable(msg) from None
    except Exception as e:  # a bundle that passes its hashes can still fail in any library
        raise bundle_failure(path, e) from None
    log.info(
        "scorer.loaded",
        path=str(path),
        bundle_id=bundle.bundle_id,
        scorer=scorer.name,
        mode=options.mode,
        runtime=bundle.engine.runtime,
        fusion=(options.fusion or bundle.fusion).method,
        drift_monitor=scorer.drift is not None,
    )
    return ActiveModel(
        scorer=scorer, bar_seconds=bundle.bar_seconds, min_bars=bundle.bars_needed, bundle=bundle
    )
