"""The one model slot: what serves now (an ActiveModel), how it changes (hot-swap off the loop,
the start-up load, the background bootstrap) and the shadow beside it. The trading daemon and
`vlmtrader serve` each own one; the pipeline and POST /predict read it.

Creating the trading daemon's slot (daemon_slot) imports no torch: it checks the bundle's card and
files only. start() warms it: scorer.kind ml waits for the bundle (the daemon is ready once it
serves), auto loads it in the background while the rule scorer trades, then swaps."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, Literal

import msgspec
import structlog

from daemon.config import AppConfig, ScorerConfig
from daemon.errors import ConfigError, InputError, InvariantError
from daemon.model.active import ActiveModel, LoadOptions, load_active, rules_model
from daemon.model.bootstrap import run_bootstrap
from daemon.model.loader import LoadedBundle, precheck_bundle
from daemon.model.shadow import ShadowRunner, ShadowStats
from daemon.reload_plan import BUNDLE_SETTINGS
from strategy.scoring import Scorer

log = structlog.get_logger("daemon.model")

# Scorer settings a running slot takes (apply_settings); the others need a restart.
_LIVE_SETTINGS = ("rules", *BUNDLE_SETTINGS)


def describe_scorer(scorer: object) -> str:
    """What the scorer's signal is, in words ("rules" for the TA-Lib scorer)."""
    describe = getattr(scorer, "describe", None)
    return str(describe()) if callable(describe) else "TA-Lib rule scorer"


class ModelSlot:
    """Owns what serves; every swap happens between two batches, never inside one.

    loading is true while the model it was started for is still being built or loaded (the rule
    scorer answers meanwhile, or nothing trades yet for scorer.kind ml): /readyz reports it as
    model_warm false. cfg is the trading daemon's config (None for `vlmtrader serve`): its scorer
    settings are what apply_settings changes."""

    def __init__(
        self,
        *,
        active: ActiveModel,
        options: LoadOptions,
        bundle_path: Path | None = None,
        shadow: ShadowRunner | None = None,
        bootstrap_args: tuple[str, ...] | None = None,
        loading: bool = False,
        cfg: AppConfig | None = None,
        startup_load: Literal["none", "required", "background"] = "none",
        shadow_path: Path | None = None,
    ) -> None:
        self.active = active
        self.options = options
        self.cfg = cfg
        self.settings_reload: asyncio.Task[str] | None = None  # see apply_settings
        self.bundle_path = bundle_path
        self.shadow = shadow
        self.bootstrap_args = bootstrap_args
        self.loading = loading
        # What start() loads: the bundle before the daemon is ready (required), after it while the
        # rule scorer trades (background), or nothing; the shadow bundle follows the live one.
        self.startup_load = startup_load
        self.shadow_path = shadow_path
        self._pipeline: Any = None
        self._background: asyncio.Task[None] | None = None
        self._swap_lock = asyncio.Lock()

    def load(self, path: Path) -> ActiveModel:
        """The bundle at path as it would serve here (blocking: loads and warms the models)."""
        return load_active(path, self.options)

    @property
    def current(self) -> Scorer:
        return self.active.scorer

    @property
    def bundle_id(self) -> str | None:
        return self.active.bundle_id

    @property
    def warm(self) -> bool:
        """The model asked for serves, warmed up (a reload warms the new one before the swap)."""
        return not self.loading

    def bundle_for(self, scorer: object) -> LoadedBundle | None:
        """The loaded bundle `scorer` serves from, while it still serves (the explainer's lookup)."""
        active = self.active
        return active.bundle if active.scorer is scorer else None

    def analogs(self) -> Any:
        """The serving bundle's analog index (GET /analogs/{row}.png), None without one."""
        return getattr(self.active.bundle, "analogs", None)

    def attach(self, pipeline: Any) -> None:
        self._pipeline = pipeline
        pipeline.scorer = self.current
        pipeline.shadow = self.shadow

    def shadow_stats(self) -> ShadowStats | None:
        """The shadow's comparison so far; None while no shadow serves (or none is configured)."""
        return self.shadow.stats if self.shadow is not None else None

    def _serve(self, model: ActiveModel) -> None:
        self.active = model
        if self._pipeline is not None:
            self._pipeline.scorer = model.scorer

    def apply_settings(self, cfg: ScorerConfig) -> tuple[str, ...]:
        """Apply the scorer settings a running slot can take; returns the names of those that changed.

        rules: a serving rule scorer is replaced at once. mode, fusion, bundle and spec_hash: when a
        bundle serves (or bundle names another one), it is re-loaded under them off the loop in
        `settings_reload` (await it: the bundle id, or InputError with the settings of the bundle
        put back and the old scorer still serving); with no bundle loaded yet they apply to the
        next load (the bootstrap's swap). kind, shadow_bundle, bootstrap*, device, threads and
        workers take effect at the next start: the caller refuses them, they are not read here."""
        old = self.settings
        changed = tuple(n for n in _LIVE_SETTINGS if getattr(old, n) != getattr(cfg, n))
        if not changed:
            return ()
        self._take_settings(msgspec.structs.replace(old, **{n: getattr(cfg, n) for n in changed}))
        if "rules" in changed and self.active.bundle is None:
            previous = self.active.scorer.name
            self._serve(rules_model(cfg.rules, bar_seconds=self.active.bar_seconds))
            log.info("scorer.swapped", previous=previous, current="rules", change="rules")
        reloads = [n for n in changed if n in BUNDLE_SETTINGS]
        if cfg.kind == "rules" or not reloads:
            return changed
        if self.bundle_id is None and "bundle" not in reloads:
            return changed

        async def reload_under_new_settings() -> str:
            try:
                return await self.reload(None)
            except InputError:  # the bundle's settings go back; the old scorer serves on
                kept = {n: getattr(old, n) for n in reloads}
                self._take_settings(msgspec.structs.replace(self.settings, **kept))
                raise

        self.settings_reload = asyncio.get_running_loop().create_task(
            reload_under_new_settings(), name="scorer-settings-reload"
        )
        return changed

    @property
    def settings(self) -> ScorerConfig:
        """The scorer settings this slot runs on (a daemon's slot; serve's has none: InputError)."""
        if self.cfg is None:
            msg = "scorer settings belong to the trading daemon's config; this slot has none"
            raise InputError(msg)
        return self.cfg.scorer

    def _take_settings(self, scorer: ScorerConfig) -> None:
        if self.cfg is None:  # pragma: no cover - settings refused before
            msg = "a slot without a daemon config took scorer settings"
            raise InvariantError(msg)
        self.cfg = msgspec.structs.replace(self.cfg, scorer=scorer)
        self.options = daemon_load_options(self.cfg)
        self.bundle_path = self.cfg.state_path(scorer.bundle)

    async def reload(self, path: str | Path | None) -> str:
        """Load and warm a bundle off the loop, then swap atomically; a bad one leaves the old serving."""
        target = Path(path) if path else self.bundle_path
        if target is None:
            msg = 'no bundle to reload: none was configured; name one as {"path": DIR}'
            raise InputError(msg)
        try:
            previous, model = await self._swap_in(target)
        except InputError as e:
            log.error(
                "bundle.load_failed", path=str(target), error=str(e), scorer=self.current.name
            )
            raise
        finally:
            self.loading = False
        _log_loaded(
            target,
            model,
            previous=previous.scorer.name,
            previous_bundle_id=previous.bundle_id,
            spec_hash=model.bundle.spec_hash if model.bundle is not None else None,
        )
        return model.bundle_id or ""

    async def _swap_in(self, target: Path) -> tuple[ActiveModel, ActiveModel]:
        """Load and warm the bundle at target off the loop, then serve it: (previous, new). Loaded
        again when apply_settings changed the load options meanwhile (InputError if unusable)."""
        async with self._swap_lock:
            while True:
                options = self.options
                model = await asyncio.to_thread(self.load, target)
                if options == self.options:
                    break
            previous = self.active
            self._serve(model)
        return previous, model

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        """Warm what the slot was created for (see startup_load); call it just before the daemon is
        ready. required: the bundle and the shadow load here, ConfigError when the bundle cannot
        be used. background: a task loads the bundle, swaps it in (`scorer.swapped`), loads the
        shadow, and runs the bootstrap when the bundle is unusable and bootstrap arguments are set;
        the task starts once the caller yields to the loop (after its `daemon.ready`)."""
        if self.startup_load == "required":
            try:
                await self._load_at_start()
            except InputError as e:
                raise ml_refused(e) from None
            await self._load_shadow()
            self.loading = False
            return
        if self.startup_load == "none" and self.bootstrap_args is None and self.shadow_path is None:
            return
        self._background = asyncio.create_task(self._warm_in_background(), name="model-warm-up")
        stack.push_async_callback(self._stop_background)

    async def warmed(self) -> None:
        """Wait until the background warm-up (load, shadow, bootstrap) has ended, swapped in or not."""
        task = self._background
        if task is not None:
            await asyncio.shield(task)

    async def _stop_background(self) -> None:
        task, self._background = self._background, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _load_at_start(self) -> ActiveModel:
        """The configured bundle warmed and serving, logged as `bundle.loaded`."""
        target = self.bundle_path
        if target is None:  # pragma: no cover - daemon_slot always names one
            msg = "the slot has no bundle to load at start"
            raise InvariantError(msg)
        log.info("bundle.loading", path=str(target), scorer=self.current.name)
        _, model = await self._swap_in(target)
        _log_loaded(target, model)
        return model

    async def _warm_in_background(self) -> None:
        served = False
        try:
            if self.startup_load == "background":
                try:
                    previous = self.current.name
                    await self._load_at_start()
                    served = True
                    self._log_swapped(previous)
                except InputError as e:
                    log.warning(
                        "bundle.unavailable",
                        path=str(self.bundle_path),
                        error=str(e),
                        scorer=self.current.name,
                    )
            await self._load_shadow()
            if not served and self.bootstrap_args is not None and self.bundle_path is not None:
                await self._run_bootstrap(self.bundle_path, self.bootstrap_args)
        finally:
            self.loading = False

    async def _load_shadow(self) -> None:
        if self.shadow_path is None or self.cfg is None:
            return
        shadow = await asyncio.to_thread(load_shadow, self.shadow_path, self.cfg)
        self.shadow = shadow
        if self._pipeline is not None:
            self._pipeline.shadow = shadow

    def _log_swapped(self, previous: str) -> None:
        log.info(
            "scorer.swapped",
            previous=previous,
            current=self.current.name,
            bundle_id=self.bundle_id,
            signal=describe_scorer(self.current),
        )

    async def _run_bootstrap(self, out: Path, extra: tuple[str, ...]) -> None:
        try:
            code, log_path = await run_bootstrap(out, extra)
            if code != 0:
                log.error(
                    "model.bootstrap_failed", exit_code=code, log=str(log_path), scorer="rules"
                )
                return
            log.info("model.bootstrap_finished", out=str(out))
            previous = self.current.name
            try:
                await self.reload(None)
            except InputError:  # reload logged bundle.load_failed; the rule scorer serves on
                return
        finally:
            self.loading = False
        self._log_swapped(previous)


def _log_loaded(target: Path, model: ActiveModel, **more: object) -> None:
    """`bundle.loaded`: the bundle at target serves (a reload adds what it replaced)."""
    log.info(
        "bundle.loaded",
        path=str(target),
        bundle_id=model.bundle_id,
        scorer=model.scorer.name,
        signal=describe_scorer(model.scorer),
        **more,
    )


# ---- the trading daemon's slot -------------------------------------------------------------------
def daemon_load_options(cfg: AppConfig, *, config_fusion: bool = True) -> LoadOptions:
    """scorer.* as load options for windows of bars.*; a shadow keeps its own fitted fusion."""
    sc = cfg.scorer
    return LoadOptions(
        mode=sc.mode,
        fusion=sc.fusion if config_fusion else None,
        spec_hash=sc.spec_hash,
        device=sc.device,
        threads=sc.threads,
        workers=sc.workers,
        runtime=sc.runtime,
        bars=cfg.bars,
    )


def load_shadow(path: Path, cfg: AppConfig) -> ShadowRunner | None:
    """The shadow bundle as a second scorer (its own CLIP, XGBoost and fusion), or None with a
    `shadow.unavailable` warning when it cannot be used: a shadow never stops the daemon."""
    try:
        model = load_active(path, daemon_load_options(cfg, config_fusion=False))
    except InputError as e:
        log.warning("shadow.unavailable", path=str(path), error=str(e))
        return None
    name = f"{model.scorer.name}_shadow"
    log.info("shadow.loaded", path=str(path), bundle_id=model.bundle_id, scorer=name)
    return ShadowRunner(scorer=model.scorer, bundle_id=model.bundle_id or "")


def ml_refused(error: InputError) -> ConfigError:
    """scorer.kind ml and an unusable bundle: the daemon refuses to start (exit 2)."""
    return ConfigError(f"scorer.kind is ml but the bundle cannot be used: {error}")


def daemon_slot(cfg: AppConfig) -> ModelSlot:
    """The slot scorer.kind asks for, checked but not warmed (no torch yet; start() warms it):
    rules; ml (the bundle, loaded before the daemon is ready; ConfigError at once when its card or
    files are wrong); auto (the rule scorer, the bundle swapped in once warm, or built by
    `vlmtrader model bootstrap` in the background when scorer.bootstrap is set and it is unusable).
    """
    sc = cfg.scorer
    bundle_path = cfg.state_path(sc.bundle)
    slot = ModelSlot(
        active=rules_model(sc.rules, bar_seconds=cfg.bars.bar_seconds),
        options=daemon_load_options(cfg),
        bundle_path=bundle_path,
        bootstrap_args=sc.bootstrap_args if sc.kind == "auto" and sc.bootstrap else None,
        cfg=cfg,
        shadow_path=cfg.state_path(sc.shadow_bundle)
        if sc.shadow_bundle and sc.kind != "rules"
        else None,
    )
    if sc.kind == "rules":
        return slot
    try:
        precheck_bundle(bundle_path, spec_hash=sc.spec_hash or None)
    except InputError as e:
        if sc.kind == "ml":
            raise ml_refused(e) from None
        log.warning("bundle.unavailable", path=str(bundle_path), error=str(e), scorer="rules")
        slot.loading = slot.bootstrap_args is not None  # not warm until the bootstrap has run
        return slot
    slot.startup_load = "required" if sc.kind == "ml" else "background"
    slot.loading = True
    return slot
