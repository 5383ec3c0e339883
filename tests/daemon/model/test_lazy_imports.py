"""The daemon starts without the model stack: torch, transformers and onnxruntime load only when a
bundle is warmed (issue 16 item 4: `daemon.ready` and reconciliation come before torch)."""

from __future__ import annotations

from pathlib import Path

from tests.daemon.ml_helpers import bundle_copy, quick_bundle
from tests.import_probe import modules_loaded_after

MODEL_STACK = ("torch", "transformers", "onnxruntime")


def _loaded_after(body: str) -> list[str]:
    return modules_loaded_after(body, MODEL_STACK)


def test_import_daemon_app_when_done_then_no_model_stack_loaded() -> None:
    assert _loaded_after("import daemon.app") == []


def test_daemon_slot_when_bundles_checked_then_no_model_stack_loaded(tmp_path: Path) -> None:
    broken = bundle_copy(tmp_path, "broken")
    (broken / "fusion.json").unlink()
    body = f"""
from daemon.config import AppConfig, ScorerConfig
from daemon.errors import ConfigError
from daemon.model.slot import daemon_slot
from strategy.bars import BarStoreConfig
def config(kind, bundle):
    return AppConfig(state_dir="{tmp_path}", bars=BarStoreConfig(window=32),
                     scorer=ScorerConfig(kind=kind, bundle=bundle, bootstrap=False))
auto = daemon_slot(config("auto", "{quick_bundle()}"))
assert auto.startup_load == "background" and not auto.warm, auto.startup_load
ml = daemon_slot(config("ml", "{quick_bundle()}"))
assert ml.startup_load == "required" and not ml.warm, ml.startup_load
try:
    daemon_slot(config("ml", "{broken}"))
    raise SystemExit("a bundle missing fusion.json was accepted")
except ConfigError as e:
    assert "missing fusion.json" in str(e), e
"""
    assert _loaded_after(body) == []


def test_import_daemon_app_when_done_then_ib_client_not_loaded() -> None:
    # ib_async loads when an IB feed or IB orders open (daemon/startup.py), not at every start.
    assert modules_loaded_after("import daemon.app", ("ib_async",)) == []
