"""Finding 1: a bundle that matches its hashes but cannot be loaded is a bundle error everywhere."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon.cli import main
from daemon.config import AppConfig, ScorerConfig
from daemon.control import Controller
from daemon.errors import ConfigError
from daemon.model.active import load_active
from daemon.model.bundle_check import check_bundle
from daemon.model.loader import BundleUnusable
from daemon.model.slot import daemon_load_options
from strategy.bars import BarStoreConfig
from strategy.rule_scorer import RuleScorer
from strategy.types import TradingState
from tests.daemon.ml_helpers import WINDOW, quick_bundle, started_slot
from tests.hostile.bundles import DAMAGES, broken_bundle


def _config(tmp_path: Path, bundle: Path, kind: str = "auto") -> AppConfig:
    return AppConfig(
        state_dir=str(tmp_path),
        bars=BarStoreConfig(window=WINDOW),
        scorer=ScorerConfig(bundle=str(bundle), kind=kind, bootstrap=False),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_load_when_bundle_hashes_match_but_files_broken_then_bundle_unusable_one_line(
    tmp_path: Path, damage: str
) -> None:
    bundle = broken_bundle(tmp_path, damage)
    with pytest.raises(BundleUnusable) as e:
        load_active(bundle, daemon_load_options(_config(tmp_path, bundle)))
    assert "\n" not in str(e.value)
    assert str(bundle) in str(e.value)


def test_slot_when_auto_and_weights_truncated_then_rules_serve(tmp_path: Path) -> None:
    bundle = broken_bundle(tmp_path, "weights_truncated")
    with capture_logs() as logs:
        slot = started_slot(_config(tmp_path, bundle))
    assert isinstance(slot.current, RuleScorer)
    assert slot.warm  # nothing more is loading: the rule scorer serves on
    assert [e["event"] for e in logs if e["event"] == "bundle.unavailable"]


def test_slot_when_ml_and_weights_truncated_then_config_error_one_line(tmp_path: Path) -> None:
    bundle = broken_bundle(tmp_path, "weights_truncated")
    with pytest.raises(ConfigError) as e:
        started_slot(_config(tmp_path, bundle, kind="ml"))
    assert "\n" not in str(e.value)
    assert "cannot load" in str(e.value)


def test_reload_when_weights_truncated_then_refused_and_old_scorer_serves(tmp_path: Path) -> None:
    slot = started_slot(_config(tmp_path, quick_bundle(), kind="ml"))
    before, before_id = slot.current, slot.bundle_id
    bundle = broken_bundle(tmp_path, "weights_truncated")
    with pytest.raises(BundleUnusable):
        asyncio.run(slot.reload(str(bundle)))
    assert slot.current is before
    assert slot.bundle_id == before_id


class _Raising:
    """A DaemonControl whose reload raises what a broken library raises."""

    async def reload_bundle(self, path: str | None) -> str:
        msg = "Error while deserializing header: HeaderTooLarge"
        raise RuntimeError(msg)

    async def pause(self, reason: str) -> None:
        self.paused = True

    def status(self) -> dict[str, Any]:
        return {}

    def readiness(self) -> dict[str, bool]:
        return {}

    async def resume(self, reason: str) -> None: ...
    async def flatten(self, symbol: str | None, reason: str) -> int:
        return 0

    async def set_trading_state(self, state: TradingState, reason: str) -> None: ...
    async def reload_strategy(self) -> None: ...


def test_controller_when_command_raises_unexpectedly_then_rejection_and_next_command_applies() -> (
    None
):
    control = _Raising()
    controller = Controller(control=control)  # type: ignore[arg-type]

    async def scenario() -> tuple[Any, Any]:
        first = await controller.handle(b'{"command": "reload_bundle"}', source="mqtt")
        second = await controller.handle(b'{"command": "pause"}', source="mqtt")
        return first, second

    first, second = asyncio.run(scenario())
    assert not first.ok
    assert first.reason == "error"
    assert "HeaderTooLarge" in first.error
    assert second.ok
    assert control.paused


def test_model_verify_when_weights_truncated_then_exit_1_naming_the_load_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = broken_bundle(tmp_path, "weights_truncated")
    assert main(["model", "verify", str(bundle)]) == 1
    err = capsys.readouterr().err
    assert "cannot load" in err
    assert err.count("\n") == 1


def test_check_bundle_when_bundle_good_then_scores_a_chart() -> None:
    checked = check_bundle(quick_bundle())
    assert 0.0 <= checked.p_up <= 1.0
    assert checked.bars >= WINDOW // 2


def _png_header(width: int, height: int, *, depth: int = 8, color: int = 6) -> bytes:
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + b"\x00" * 64
    )


@pytest.mark.parametrize(
    ("width", "height", "depth", "color"),
    [(7_072, 7_072, 8, 6), (100_000, 100_000, 8, 2), (4_096, 4_096, 16, 6), (2**31 - 1, 1, 8, 0)],
)
def test_decode_chart_when_png_would_inflate_past_limit_then_input_error_before_decoding(
    width: int, height: int, depth: int, color: int
) -> None:
    from daemon.errors import InputError
    from daemon.model.active import LoadOptions, load_active
    from daemon.model.charts import MAX_PNG_PIXEL_BYTES, decode_chart

    model = load_active(quick_bundle(), LoadOptions(threads=1))
    with pytest.raises(InputError) as e:
        decode_chart(model, _png_header(width, height, depth=depth, color=color))
    assert f"over the limit of {MAX_PNG_PIXEL_BYTES}" in str(e.value)
    assert "\n" not in str(e.value)
