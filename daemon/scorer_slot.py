"""The scorer the pipeline uses now, and how it changes: bundle load, background bootstrap, hot-swap."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import msgspec
import structlog

from daemon.config import AppConfig, ScorerConfig
from daemon.errors import ConfigError, InputError
from daemon.ml_loader import BundleUnusable, load_ml_scorer
from daemon.shadow import ShadowRunner
from strategy.fusion import DriftReport
from strategy.rule_scorer import RuleScorer
from strategy.scoring import Scorer

log = structlog.get_logger("daemon.scorer_slot")

__all__ = [
    "BundleUnusable",
    "ScorerSlot",
    "bundle_failure",
    "describe_scorer",
    "load_bundle_scorer",
    "log_drift",
]


def load_bundle_scorer(
    path: Path, cfg: AppConfig, *, config_fusion: bool = True
) -> tuple[Scorer, str]:
    """Load, validate and warm a model bundle; returns the scorer and the bundle id (BundleUnusable if not).

    config_fusion: scorer.fusion (when set) replaces the bundle's fitted fusion; a shadow keeps its own."""
    sc = cfg.scorer
    try:
        return load_ml_scorer(
            path,
            bars=cfg.bars,
            mode=sc.mode,
            fusion=sc.fusion if config_fusion else None,
            spec_hash=sc.spec_hash,
            device=sc.device,
            threads=sc.threads,
            workers=sc.workers,
            runtime=sc.runtime,
        )
    except InputError:
        raise
    except Exception as e:  # a bundle that passes its hashes can still fail to load in any library
        raise bundle_failure(path, e) from None


def bundle_failure(path: Path, error: BaseException) -> BundleUnusable:
    """Any failure to load a bundle as one line naming the bundle and the cause."""
    detail = " ".join(str(error).split()) or "no detail"
    return BundleUnusable(f"{path}: cannot load the bundle ({type(error).__name__}: {detail})")


def load_shadow(path: Path, cfg: AppConfig) -> ShadowRunner | None:
    """The shadow bundle as a second scorer (its own CLIP, XGBoost and fusion), or None with a
    `shadow.unavailable` warning when it cannot be used: a shadow never stops the daemon."""
    try:
        scorer, bundle_id = load_bundle_scorer(path, cfg, config_fusion=False)
    except InputError as e:
        log.warning("shadow.unavailable", path=str(path), error=str(e))
        return None
    log.info("shadow.loaded", path=str(path), bundle_id=bundle_id, scorer=f"{scorer.name}_shadow")
    return ShadowRunner(scorer=scorer, bundle_id=bundle_id)


def describe_scorer(scorer: object) -> str:
    """What the scorer's signal is, in words ("rules" for the TA-Lib scorer)."""
    describe = getattr(scorer, "describe", None)
    return str(describe()) if callable(describe) else "TA-Lib rule scorer"


def log_drift(scorer: object) -> int:
    """Log each drift crossing the scorer found since the last call as model.drift_detected; returns how many."""
    take = getattr(scorer, "take_drift_reports", None)
    if take is None:
        return 0
    reports: list[DriftReport] = take()
    for r in reports:
        log.warning(
            "model.drift_detected",
            scorer=getattr(scorer, "name", ""),
            max_psi=round(r.max_psi, 4),
            drifted=list(r.drifted),
            threshold=r.threshold,
            samples=r.samples,
            bar_ts=r.ts.isoformat() if r.ts is not None else None,
            recommendation=r.recommendation,
        )
    return len(reports)


class ScorerSlot:
    """Owns the pipeline's scorer; every swap happens between two bar batches, never inside one."""

    def __init__(self, *, config: AppConfig, state_dir: Path) -> None:
        self.cfg = config
        self.bundle_path = config.state_path(config.scorer.bundle)
        self.bundle_id: str | None = None
        self._pipeline: Any = None
        self.settings_reload: asyncio.Task[str] | None = None  # see apply_settings
        self._bootstrap: asyncio.Task[None] | None = None
        kind = config.scorer.kind
        self.current: Scorer = RuleScorer(config=config.scorer.rules)
        self.shadow: ShadowRunner | None = None
        if kind == "rules":
            return
        if config.scorer.shadow_bundle:
            self.shadow = load_shadow(config.state_path(config.scorer.shadow_bundle), config)
        try:
            self.current, self.bundle_id = load_bundle_scorer(self.bundle_path, config)
            log.info(
                "bundle.loaded",
                path=str(self.bundle_path),
                bundle_id=self.bundle_id,
                scorer=self.current.name,
                signal=describe_scorer(self.current),
            )
        except InputError as e:
            if kind == "ml":
                msg = f"scorer.kind is ml but the bundle cannot be used: {e}"
                raise ConfigError(msg) from None
            log.warning(
                "bundle.unavailable", path=str(self.bundle_path), error=str(e), scorer="rules"
            )

    @property
    def warm(self) -> bool:
        """A loaded scorer always serves: a reload warms the new one before the swap."""
        return self.current is not None

    def attach(self, pipeline: Any) -> None:
        self._pipeline = pipeline
        pipeline.scorer = self.current
        pipeline.shadow = self.shadow

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        """In auto mode with no usable bundle, build one in the background and swap it in."""
        if (
            self.cfg.scorer.kind != "auto"
            or self.bundle_id is not None
            or not self.cfg.scorer.bootstrap
        ):
            return
        self._bootstrap = asyncio.create_task(self._run_bootstrap(), name="model-bootstrap")
        stack.push_async_callback(self._stop_bootstrap)

    async def _stop_bootstrap(self) -> None:
        task, self._bootstrap = self._bootstrap, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run_bootstrap(self) -> None:
        out = self.bundle_path
        args = [
            sys.executable,
            "-m",
            "daemon.cli",
            "model",
            "bootstrap",
            "--out",
            str(out),
            *self.cfg.scorer.bootstrap_args,
        ]
        log_path = out.parent / "bootstrap.log"
        log.info("model.bootstrap_started", out=str(out), scorer="rules", log=str(log_path))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as sink:
            proc = await asyncio.create_subprocess_exec(
                *args, stdout=sink, stderr=asyncio.subprocess.STDOUT
            )
            try:
                code = await proc.wait()
            except asyncio.CancelledError:
                proc.terminate()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 10)
                if proc.returncode is None:
                    proc.kill()
                raise
        if code != 0:
            log.error("model.bootstrap_failed", exit_code=code, log=str(log_path), scorer="rules")
            return
        log.info("model.bootstrap_finished", out=str(out))
        try:
            bundle_id = await self.reload(None)
        except InputError as e:
            log.error("bundle.load_failed", path=str(out), error=str(e), scorer=self.current.name)
            return
        log.info(
            "scorer.swapped",
            previous="rules",
            current=self.current.name,
            bundle_id=bundle_id,
            signal=describe_scorer(self.current),
        )

    async def reload(self, path: str | None) -> str:
        """Load and warm a bundle off the loop, then swap atomically; a bad one leaves the old serving."""
        target = Path(path) if path else self.bundle_path
        try:
            scorer, bundle_id = await asyncio.to_thread(load_bundle_scorer, target, self.cfg)
        except InputError as e:
            log.error(
                "bundle.load_failed", path=str(target), error=str(e), scorer=self.current.name
            )
            raise
        previous = self.current.name
        self.current = scorer
        self.bundle_id = bundle_id
        if self._pipeline is not None:
            self._pipeline.scorer = scorer
        log.info(
            "bundle.loaded",
            path=str(target),
            bundle_id=bundle_id,
            previous=previous,
            scorer=scorer.name,
            signal=describe_scorer(scorer),
        )
        return bundle_id

    def apply_settings(self, cfg: ScorerConfig) -> tuple[str, ...]:
        """Apply the scorer settings a running slot can take; returns the names of those that changed.

        rules: a serving rule scorer is replaced at once. mode, fusion, bundle and spec_hash: when a
        bundle serves (or bundle names another one), it is re-loaded under them off the loop in
        `settings_reload` (await it: the bundle id, or InputError with the settings of the bundle
        put back and the old scorer still serving); with no bundle loaded yet they apply to the
        next load (the bootstrap's swap). kind, shadow_bundle, bootstrap*, device, threads and
        workers take effect at the next start: the caller refuses them, they are not read here."""
        names = ("rules", "mode", "fusion", "bundle", "spec_hash")
        bundle_names = ("mode", "fusion", "bundle", "spec_hash")
        old = self.cfg.scorer
        changed = tuple(n for n in names if getattr(old, n) != getattr(cfg, n))
        if not changed:
            return ()
        replace = msgspec.structs.replace
        scorer = replace(old, **{n: getattr(cfg, n) for n in changed})
        self.cfg = replace(self.cfg, scorer=scorer)
        self.bundle_path = self.cfg.state_path(scorer.bundle)
        if "rules" in changed and isinstance(self.current, RuleScorer):
            previous, self.current = self.current, RuleScorer(config=scorer.rules)
            if self._pipeline is not None:
                self._pipeline.scorer = self.current
            log.info("scorer.swapped", previous=previous.name, current="rules", change="rules")
        reloads = [n for n in changed if n in bundle_names]
        if scorer.kind == "rules" or not reloads:
            return changed
        if self.bundle_id is None and "bundle" not in reloads:
            return changed

        async def reload_under_new_settings() -> str:
            try:
                return await self.reload(None)
            except InputError:
                kept = replace(self.cfg.scorer, **{n: getattr(old, n) for n in reloads})
                self.cfg = replace(self.cfg, scorer=kept)
                self.bundle_path = self.cfg.state_path(kept.bundle)
                raise

        self.settings_reload = asyncio.get_running_loop().create_task(
            reload_under_new_settings(), name="scorer-settings-reload"
        )
        return changed
