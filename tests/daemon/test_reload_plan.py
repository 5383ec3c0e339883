"""Which keys a reload applies and which it refuses (daemon/reload_plan.py)."""

from __future__ import annotations

import msgspec
import pytest

from daemon.config import AppConfig, decode_config
from daemon.errors import ConfigError
from daemon.reload_plan import plan_reload, restart_reason

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


# ModelSlot.apply_settings is tested with the slot: tests/daemon/model/test_slot.py
