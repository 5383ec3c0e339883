"""Which keys a reload applies and which it refuses (daemon/reload_plan.py), and the scorer settings
a running ScorerSlot takes (apply_settings)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest

from daemon.config import AppConfig, ScorerConfig, decode_config
from daemon.errors import ConfigError, InputError
from daemon.reload_plan import plan_reload, restart_reason
from daemon.scorer_slot import ScorerSlot
from strategy.bars import BarStoreConfig
from strategy.rule_scorer import RuleScorer, RuleScorerConfig
from tests.daemon.ml_helpers import WINDOW, quick_bundle
from vlm_engine.bundle import read_card

replace = msgspec.structs.replace


@pytest.mark.parametrize(
    ("key", "live"),
    [
        ("strategy.hold_bars", True),
        ("risk.max_daily_loss", True),
        ("risk.trading_hours.start", True),
        ("shutdown.cancel_open_orders", True),
        ("log.level", True),
        ("scorer.rules.weights.hammer", True),
        ("scorer.fusion", True),
        ("scorer.bundle", True),
        ("mode", False),
        ("account", False),
        ("log.format", False),
        ("feed.sim.market.symbols[2]", False),
        ("bars.window", False),
        ("api.port", False),
        ("mqtt.host", False),
        ("scorer.kind", False),
        ("scorer.bootstrap_args[0]", False),
        ("scorer.threads", False),
    ],
)
def test_restart_reason_when_key_given_then_live_keys_none_others_one_line(
    key: str, live: bool
) -> None:
    why = restart_reason(key)
    assert (why is None) == live
    if why is not None:
        assert why.startswith("needs a restart: ")
        assert "\n" not in why


def test_plan_when_mode_account_and_risk_change_then_risk_applied_rest_keeps_running_values() -> (
    None
):
    running = decode_config("account: desk1\n")
    new = replace(
        running,
        account="desk2",
        starting_cash=5.0,
        risk=replace(running.risk, max_daily_loss=10.0),
        log=replace(running.log, level="debug", format="json"),
    )
    changed = ["account", "log.format", "log.level", "risk.max_daily_loss", "starting_cash"]
    plan = plan_reload(running, new, changed)
    assert plan.applied == ("log.level", "risk.max_daily_loss")
    assert sorted(plan.refused) == ["account", "log.format", "starting_cash"]
    assert plan.config.account == "desk1"
    assert plan.config.starting_cash == running.starting_cash
    assert plan.config.log == replace(running.log, level="debug")
    assert plan.config.risk.max_daily_loss == 10.0


def test_plan_when_live_keys_do_not_fit_the_refused_ones_then_config_error_names_both() -> None:
    running = AppConfig()
    new = replace(
        running,
        bars=replace(running.bars, bar_seconds=300),
        strategy=replace(running.strategy, bar_seconds=300),
    )
    with pytest.raises(ConfigError) as e:
        plan_reload(running, new, ["bars.bar_seconds", "strategy.bar_seconds"], source="c.yaml")
    assert "reload refused" in str(e.value)
    assert "strategy.bar_seconds (300) differs from bars.bar_seconds (60)" in str(e.value)


def test_apply_settings_when_rules_change_then_serving_rule_scorer_replaced() -> None:
    slot = ScorerSlot(config=AppConfig(), state_dir=Path("state"))
    old = slot.current
    rules = RuleScorerConfig(max_edge=0.1)
    changed = slot.apply_settings(replace(ScorerConfig(), rules=rules, threads=4))
    assert changed == ("rules",)  # threads is the caller's to refuse
    assert isinstance(slot.current, RuleScorer)
    assert slot.current is not old
    assert slot.current.config == rules
    assert slot.cfg.scorer.threads == 1
    assert slot.settings_reload is None
    assert slot.apply_settings(replace(ScorerConfig(), rules=rules)) == ()


def test_apply_settings_when_new_bundle_unusable_then_reload_fails_and_bundle_kept(
    tmp_path: Path,
) -> None:
    cfg = AppConfig(state_dir=str(tmp_path), scorer=ScorerConfig(kind="auto", bootstrap=False))
    slot = ScorerSlot(config=cfg, state_dir=tmp_path)
    assert slot.bundle_id is None  # no bundle on disk: the rule scorer serves

    async def main() -> None:
        changed = slot.apply_settings(replace(cfg.scorer, bundle="bundles/v2", mode="xgb"))
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
    slot = ScorerSlot(config=cfg, state_dir=tmp_path)
    assert slot.apply_settings(replace(cfg.scorer, mode="clip")) == ("mode",)
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
    slot = ScorerSlot(config=cfg, state_dir=tmp_path)
    fused = slot.current
    holder = SimpleNamespace(scorer=None)
    slot.attach(holder)

    async def main() -> tuple[str, tuple[str, ...]]:
        assert slot.apply_settings(replace(cfg.scorer, mode="xgb")) == ("mode",)
        assert slot.settings_reload is not None
        bundle_id = await slot.settings_reload
        changed = slot.apply_settings(replace(cfg.scorer, mode="xgb", spec_hash="f" * 16))
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
