from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest
from structlog.testing import capture_logs

from daemon.config import AppConfig, ScorerConfig
from daemon.errors import ConfigError, InputError
from daemon.model.loader import BundleUnusable, read_fusion
from daemon.model.scoring import log_drift
from daemon.model.slot import ModelSlot, daemon_slot, describe_scorer
from daemon.reload_plan import BUNDLE_KEYS
from strategy.bars import BarStoreConfig
from strategy.fusion import FusionConfig
from strategy.rule_scorer import RuleScorer, RuleScorerConfig
from tests.daemon.ml_helpers import (
    WINDOW,
    bundle_copy,
    quick_bundle,
    sample_windows,
    started_slot,
)
from vlm_engine.bundle import read_card


def _config(tmp_path: Path, bundle: Path, **scorer: object) -> AppConfig:
    return AppConfig(
        state_dir=str(tmp_path),
        bars=BarStoreConfig(window=WINDOW),
        scorer=ScorerConfig(bundle=str(bundle), **scorer),  # type: ignore[arg-type]
    )


def _slot(cfg: AppConfig) -> tuple[ModelSlot, SimpleNamespace]:
    holder = SimpleNamespace(scorer=None, shadow=None)
    return started_slot(cfg, attach_to=holder), holder


def test_slot_when_kind_ml_and_bundle_valid_then_ml_scorer_serves(tmp_path: Path) -> None:
    slot, holder = _slot(_config(tmp_path, quick_bundle(), kind="ml"))
    assert slot.current.name == "ml"
    assert holder.scorer is slot.current
    assert slot.bundle_id == read_card(quick_bundle()).bundle_id
    assert len(slot.current.score(sample_windows()[:2])) == 2


def test_slot_when_kind_ml_and_bundle_missing_then_config_error_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"scorer\.kind is ml but the bundle cannot be used") as e:
        _slot(_config(tmp_path, tmp_path / "missing", kind="ml"))
    assert "no such bundle directory" in str(e.value)
    assert "\n" not in str(e.value)


def test_slot_when_kind_ml_and_other_chart_spec_then_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trained on chart spec"):
        _slot(_config(tmp_path, quick_bundle(), kind="ml", spec_hash="f" * 16))


def test_slot_when_kind_auto_and_bundle_corrupt_then_rules_and_unavailable_logged(
    tmp_path: Path,
) -> None:
    bundle = bundle_copy(tmp_path)
    (bundle / "xgb" / "model.json").write_text("{}")
    with capture_logs() as logs:
        slot, _ = _slot(_config(tmp_path, bundle, kind="auto", bootstrap=False))
    assert isinstance(slot.current, RuleScorer)
    assert slot.bundle_id is None
    (event,) = [e for e in logs if e["event"] == "bundle.unavailable"]
    assert "corrupt bundle, xgb/model.json" in event["error"]
    assert event["scorer"] == "rules"


def test_reload_when_bundle_corrupt_then_refused_and_old_scorer_keeps_serving(
    tmp_path: Path,
) -> None:
    slot, holder = _slot(_config(tmp_path, quick_bundle(), kind="ml"))
    serving, bundle_id = slot.current, slot.bundle_id
    bad = bundle_copy(tmp_path, "bad")
    (bad / "fusion.json").write_text('{"method": "stacking"}')
    with (
        capture_logs() as logs,
        pytest.raises(BundleUnusable, match=r"corrupt bundle, fusion\.json"),
    ):
        asyncio.run(slot.reload(str(bad)))
    assert slot.current is serving
    assert holder.scorer is serving
    assert slot.bundle_id == bundle_id
    assert slot.warm
    assert [e["scorer"] for e in logs if e["event"] == "bundle.load_failed"] == ["ml"]


def test_reload_when_rules_serving_and_bundle_valid_then_swapped_between_batches(
    tmp_path: Path,
) -> None:
    slot, holder = _slot(_config(tmp_path, tmp_path / "later", kind="auto", bootstrap=False))
    assert isinstance(holder.scorer, RuleScorer)
    with capture_logs() as logs:
        bundle_id = asyncio.run(slot.reload(str(bundle_copy(tmp_path))))
    assert holder.scorer is slot.current
    assert slot.current.name == "ml"
    assert bundle_id == slot.bundle_id == read_card(quick_bundle()).bundle_id
    swaps = [e for e in logs if e["event"] == "bundle.loaded" and "previous" in e]
    assert [(e["previous"], e["scorer"]) for e in swaps] == [("rules", "ml")]


def test_log_drift_when_scorer_has_no_drift_monitor_then_nothing_logged() -> None:
    with capture_logs() as logs:
        assert log_drift(RuleScorer(config=RuleScorerConfig())) == 0
    assert logs == []


def test_slot_when_bundle_loaded_then_log_says_what_the_signal_is(tmp_path: Path) -> None:
    with capture_logs() as logs:
        slot, _ = _slot(_config(tmp_path, quick_bundle(), kind="ml"))
    loaded = next(e for e in logs if e["event"] == "bundle.loaded" and "scorer" in e)
    fusion = read_fusion(quick_bundle())
    assert loaded["signal"] == fusion.describe(xgb_reads_clip=True)
    assert loaded["signal"].startswith("fused = ")
    assert describe_scorer(slot.current) == loaded["signal"]
    assert describe_scorer(RuleScorer(config=RuleScorerConfig())) == "TA-Lib rule scorer"


def test_slot_when_auto_bootstrap_runs_then_not_warm_until_it_ends(tmp_path: Path) -> None:
    cfg = _config(tmp_path, tmp_path / "missing", kind="auto", bootstrap_args=("--no-such-flag",))
    slot = daemon_slot(cfg)
    holder = SimpleNamespace(scorer=None)
    slot.attach(holder)
    assert isinstance(holder.scorer, RuleScorer)
    assert not slot.warm  # the bundle the config asks for is not there yet

    async def scenario() -> bool:
        async with contextlib.AsyncExitStack() as stack:
            await slot.start(stack)
            during = slot.warm
            await asyncio.wait_for(slot.warmed(), 120)
            return during

    with capture_logs() as logs:
        during = asyncio.run(scenario())
    assert during is False
    assert slot.warm  # the bootstrap failed: rules serve on, nothing is loading
    assert isinstance(slot.current, RuleScorer)
    assert [e["exit_code"] for e in logs if e["event"] == "model.bootstrap_failed"] == [2]


def test_slot_when_rules_or_bundle_loaded_then_warm(tmp_path: Path) -> None:
    rules, _ = _slot(_config(tmp_path, tmp_path / "missing", kind="rules"))
    assert rules.warm
    ml, _ = _slot(_config(tmp_path, quick_bundle(), kind="ml"))
    assert ml.warm


# ---- apply_settings: the scorer settings a config reload applies (contract with engineer "reload")


def test_apply_settings_when_rules_change_then_serving_rule_scorer_replaced() -> None:
    slot = daemon_slot(AppConfig())
    old = slot.current
    rules = RuleScorerConfig(max_edge=0.1)
    changed = slot.apply_settings(msgspec.structs.replace(ScorerConfig(), rules=rules, threads=4))
    assert changed == ("rules",)  # threads is the caller's to refuse
    assert isinstance(slot.current, RuleScorer)
    assert slot.current is not old
    assert slot.current.config == rules
    assert slot.cfg.scorer.threads == 1
    assert slot.settings_reload is None
    assert slot.apply_settings(msgspec.structs.replace(ScorerConfig(), rules=rules)) == ()


def test_apply_settings_when_new_bundle_unusable_then_reload_fails_and_bundle_kept(
    tmp_path: Path,
) -> None:
    cfg = AppConfig(state_dir=str(tmp_path), scorer=ScorerConfig(kind="auto", bootstrap=False))
    slot = daemon_slot(cfg)
    assert slot.bundle_id is None  # no bundle on disk: the rule scorer serves

    async def main() -> None:
        changed = slot.apply_settings(
            msgspec.structs.replace(cfg.scorer, bundle="bundles/v2", mode="xgb")
        )
        assert changed == ("mode", "bundle")
        assert slot.settings_reload is not None
        with pytest.raises(InputError, match="bundles/v2"):
            await slot.settings_reload

    asyncio.run(main())
    assert (slot.cfg.scorer.bundle, slot.cfg.scorer.mode) == ("bundles/default", "fused")
    assert slot.bundle_path == tmp_path / "bundles/default"
    assert slot.current.name == "rules"


def test_apply_settings_when_no_bundle_loaded_and_mode_changes_then_kept_for_the_next_load(
    tmp_path: Path,
) -> None:
    cfg = AppConfig(state_dir=str(tmp_path), scorer=ScorerConfig(kind="auto", bootstrap=False))
    slot = daemon_slot(cfg)
    assert slot.apply_settings(msgspec.structs.replace(cfg.scorer, mode="clip")) == ("mode",)
    assert slot.settings_reload is None
    assert slot.cfg.scorer.mode == "clip"


def test_apply_settings_when_bundle_serves_then_reloaded_under_new_mode_or_kept_on_failure(
    tmp_path: Path,
) -> None:
    bundle = quick_bundle()
    cfg = AppConfig(
        state_dir=str(tmp_path),
        bars=BarStoreConfig(window=WINDOW),
        scorer=ScorerConfig(kind="ml", bundle=str(bundle)),
    )
    slot, holder = _slot(cfg)
    fused = slot.current

    async def main() -> tuple[str, tuple[str, ...]]:
        assert slot.apply_settings(msgspec.structs.replace(cfg.scorer, mode="xgb")) == ("mode",)
        assert slot.settings_reload is not None
        bundle_id = await slot.settings_reload
        changed = slot.apply_settings(
            msgspec.structs.replace(cfg.scorer, mode="xgb", spec_hash="f" * 16)
        )
        assert slot.settings_reload is not None
        with pytest.raises(InputError, match="chart spec"):
            await slot.settings_reload
        return bundle_id, changed

    bundle_id, changed = asyncio.run(main())
    assert bundle_id == read_card(bundle).bundle_id
    assert getattr(slot.current, "mode", None) == "xgb"
    assert slot.current is not fused
    assert holder.scorer is slot.current
    assert changed == ("spec_hash",)
    assert (slot.cfg.scorer.mode, slot.cfg.scorer.spec_hash) == ("xgb", "")


def _bundle_setting(name: str, tmp_path: Path) -> object:
    """A new, loadable value of the scorer setting a reload key names."""
    values = {
        "mode": lambda: "xgb",
        "fusion": lambda: FusionConfig(method="weighted", weights={"clip": 0.5, "xgb": 0.5}),
        "bundle": lambda: str(bundle_copy(tmp_path)),
        "spec_hash": lambda: read_card(quick_bundle()).spec_hash,
    }
    return values[name]()


@pytest.mark.parametrize("key", BUNDLE_KEYS)
def test_apply_settings_when_a_bundle_key_is_reloaded_then_the_bundle_reloads_under_it(
    key: str, tmp_path: Path
) -> None:
    cfg = _config(tmp_path, quick_bundle(), kind="ml")
    slot, holder = _slot(cfg)
    before = slot.current
    name = key.removeprefix("scorer.")
    value = _bundle_setting(name, tmp_path)

    async def main() -> str:
        assert slot.apply_settings(msgspec.structs.replace(cfg.scorer, **{name: value})) == (name,)
        assert slot.settings_reload is not None  # a reload key re-loads the bundle
        return await slot.settings_reload

    assert asyncio.run(main()) == read_card(quick_bundle()).bundle_id
    assert getattr(slot.cfg.scorer, name) == value
    assert slot.current is not before
    assert holder.scorer is slot.current


# ---- start-up: checked at creation (no torch), warmed by start() (issue 16 item 4) ----------------


def test_slot_when_auto_and_bundle_on_disk_then_rules_serve_until_warm_then_swapped(
    tmp_path: Path,
) -> None:
    slot = daemon_slot(_config(tmp_path, quick_bundle(), kind="auto", bootstrap=False))
    holder = SimpleNamespace(scorer=None, shadow=None)
    slot.attach(holder)
    assert isinstance(holder.scorer, RuleScorer)
    assert not slot.warm  # /readyz model_warm false: the bundle is still to load

    async def scenario() -> tuple[bool, str]:
        async with contextlib.AsyncExitStack() as stack:
            await slot.start(stack)
            during = (slot.warm, slot.current.name)  # start() returned without loading anything
            await asyncio.wait_for(slot.warmed(), 120)
            return during

    with capture_logs() as logs:
        during = asyncio.run(scenario())
    assert during == (False, "rules")
    assert slot.warm
    assert holder.scorer is slot.current
    assert slot.current.name == "ml"
    slot_lines = ("bundle.loading", "bundle.loaded", "scorer.swapped")
    # vlm_engine logs a bundle.loaded of its own (with spec_hash): not the slot's decision
    steps = [e for e in logs if e["event"] in slot_lines and "spec_hash" not in e]
    assert [e["event"] for e in steps] == ["bundle.loading", "bundle.loaded", "scorer.swapped"]
    swapped = steps[-1]
    assert (swapped["previous"], swapped["current"]) == ("rules", "ml")
    assert swapped["bundle_id"] == read_card(quick_bundle()).bundle_id


def test_slot_when_kind_ml_and_file_missing_then_config_error_before_any_load(
    tmp_path: Path,
) -> None:
    bundle = bundle_copy(tmp_path)
    (bundle / "xgb" / "model.json").unlink()
    with (
        capture_logs() as logs,
        pytest.raises(ConfigError, match=r"incomplete bundle, missing xgb/model\.json"),
    ):
        daemon_slot(_config(tmp_path, bundle, kind="ml"))
    assert not [e for e in logs if e["event"] in ("bundle.loading", "scorer.loaded")]


def test_slot_when_kind_ml_and_file_corrupt_then_not_warm_and_start_refuses(
    tmp_path: Path,
) -> None:
    bundle = bundle_copy(tmp_path)
    (bundle / "fusion.json").write_text('{"method": "stacking"}')  # on disk, but not its sha256
    slot = daemon_slot(_config(tmp_path, bundle, kind="ml"))
    assert not slot.warm

    async def start() -> None:
        async with contextlib.AsyncExitStack() as stack:
            await slot.start(stack)

    with pytest.raises(ConfigError, match=r"kind is ml .* corrupt bundle, fusion\.json") as e:
        asyncio.run(start())
    assert "\n" not in str(e.value)


def test_slot_when_auto_bundle_unusable_and_bootstrap_set_then_bootstrap_after_failed_load(
    tmp_path: Path,
) -> None:
    bundle = bundle_copy(tmp_path)
    (bundle / "xgb" / "model.json").write_text("{}")
    cfg = _config(tmp_path, bundle, kind="auto", bootstrap_args=("--no-such-flag",))
    with capture_logs() as logs:
        slot = started_slot(cfg)
    wanted = ("bundle.unavailable", "model.bootstrap_started", "model.bootstrap_failed")
    assert [e["event"] for e in logs if e["event"] in wanted] == list(wanted)
    assert isinstance(slot.current, RuleScorer)
    assert slot.warm  # the bootstrap failed: nothing is loading, the rule scorer serves on


def test_apply_settings_when_mode_changes_before_bundle_warm_then_it_serves_under_new_mode(
    tmp_path: Path,
) -> None:
    cfg = _config(tmp_path, quick_bundle(), kind="auto", bootstrap=False)
    slot = daemon_slot(cfg)

    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as stack:
            await slot.start(stack)
            assert slot.apply_settings(msgspec.structs.replace(cfg.scorer, mode="xgb")) == ("mode",)
            assert slot.settings_reload is None  # no bundle serves yet: the warm-up takes it
            await asyncio.wait_for(slot.warmed(), 120)

    asyncio.run(scenario())
    assert getattr(slot.current, "mode", None) == "xgb"
    assert slot.bundle_id == read_card(quick_bundle()).bundle_id


def test_slot_when_auto_with_shadow_then_shadow_loads_after_the_swap_and_reaches_the_pipeline(
    tmp_path: Path,
) -> None:
    bundle = quick_bundle()
    cfg = AppConfig(
        state_dir=str(bundle.parent),
        bars=BarStoreConfig(window=WINDOW),
        scorer=ScorerConfig(
            kind="auto", bundle=bundle.name, shadow_bundle=bundle.name, bootstrap=False
        ),
    )
    slot = daemon_slot(cfg)
    holder = SimpleNamespace(scorer=None, shadow=None)
    slot.attach(holder)
    assert slot.shadow_stats() is None  # metrics show no shadow until it has loaded
    with capture_logs() as logs:
        asyncio.run(_warm(slot))
    assert slot.shadow is not None
    assert holder.shadow is slot.shadow
    assert slot.shadow_stats() == slot.shadow.stats
    names = [e["event"] for e in logs]
    assert names.index("scorer.swapped") < names.index("shadow.loaded")


async def _warm(slot: ModelSlot) -> None:
    async with contextlib.AsyncExitStack() as stack:
        await slot.start(stack)
        await asyncio.wait_for(slot.warmed(), 120)
