"""AppConfig: the whole daemon's configuration, composed from each package's *Config, validated once."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from daemon.api.config import ApiConfig
from daemon.bus.config import MqttConfig
from daemon.bus.config import check as check_mqtt
from daemon.cluster.config import RayConfig
from daemon.config_hints import enum_hint
from daemon.errors import ConfigError
from daemon.explain.config import ExplainConfig
from daemon.feeds.replay_config import ReplayFeedConfig
from daemon.feeds.sim import SimFeedConfig
from daemon.ib.config import IbConfig, check_ib
from daemon.journal import JournalConfig
from strategy.bars import BarStoreConfig
from strategy.fusion import FusionConfig
from strategy.risk import RiskConfig
from strategy.rule_scorer import RuleScorerConfig
from strategy.sim_broker import SimBrokerConfig
from strategy.target_strategy import StrategyConfig

Mode = Literal["paper-sim", "ib-paper", "ib-live", "backtest"]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class LogConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class FeedConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where bars come from: the simulated market, a file replay, or IB Gateway."""

    kind: Literal["sim", "replay", "ib", "mqtt"] = "sim"
    sim: SimFeedConfig = msgspec.field(default_factory=SimFeedConfig)
    replay: ReplayFeedConfig | None = None


class ScorerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """rules: TA-Lib scorer; ml: the model bundle (CLIP + XGBoost + fusion) or refuse to start (the
    daemon is ready once it is warm); auto: the rule scorer at once, the bundle swapped in once it
    has loaded in the background, or once `vlmtrader model bootstrap` has built it when unusable.

    mode picks what the ML scorer trades on: fused (both models), xgb or clip alone. fusion null
    uses the bundle's fitted fusion.json; a fusion section replaces it (e.g. fixed weights).
    shadow_bundle (relative to state_dir) is a second full bundle (CLIP + XGBoost + fusion) that
    scores the same windows after the live orders are out: its signals are journaled as
    `<scorer>_shadow` and compared with the live ones (GET /status: shadow); it never trades. spec_hash, when set, refuses a bundle trained on any other chart spec.
    """

    kind: Literal["rules", "ml", "auto"] = "rules"
    rules: RuleScorerConfig = msgspec.field(default_factory=RuleScorerConfig)
    bundle: str = "bundles/default"  # relative to state_dir
    bootstrap: bool = True  # auto: build the default bundle in the background when it is missing
    bootstrap_args: tuple[str, ...] = ()  # extra arguments for `vlmtrader model bootstrap`
    mode: Literal["fused", "xgb", "clip"] = "fused"
    fusion: FusionConfig | None = None
    shadow_bundle: str = ""
    spec_hash: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # torch threads for CLIP; 0 = torch's default. One by default: the daemon shares the cores with
    # its own loop and with bootstrap, and OpenMP spin-waiting under contention costs up to 10x.
    threads: Annotated[int, msgspec.Meta(ge=0)] = 1
    # threads one batch of charts is split over; 0 = one per core (at most 4) when threads is 1.
    workers: Annotated[int, msgspec.Meta(ge=0)] = 0
    # what runs CLIP's image tower: torch, the bundle's ONNX export (fp32) or its INT8 one; auto
    # measures at load which of them is fastest among those whose parity holds and logs the choice
    # (engine.runtime_chosen). A refused runtime is logged with its reason and falls back (to torch
    # for a bundle without an export).
    runtime: Literal["auto", "torch", "onnx", "onnx-int8"] = "auto"


class ShutdownConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    cancel_open_orders: bool = True
    timeout_seconds: PositiveFloat = 10.0


class AppConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """partial: the file holds only some keys on purpose; a reload (SIGHUP) keeps the running
    value of every key it omits. A reload of a file that is not marked partial but omits keys
    set in the running config is refused, so that it never resets them to defaults silently."""

    mode: Mode = "paper-sim"
    partial: bool = False
    account: str = "paper"
    state_dir: str = "state"
    confirm_live: bool = False
    starting_cash: PositiveFloat = 100_000.0
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    feed: FeedConfig = msgspec.field(default_factory=FeedConfig)
    bars: BarStoreConfig = msgspec.field(default_factory=BarStoreConfig)
    scorer: ScorerConfig = msgspec.field(default_factory=ScorerConfig)
    strategy: StrategyConfig = msgspec.field(default_factory=StrategyConfig)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)
    broker: SimBrokerConfig = msgspec.field(default_factory=SimBrokerConfig)
    journal: JournalConfig = msgspec.field(default_factory=JournalConfig)
    shutdown: ShutdownConfig = msgspec.field(default_factory=ShutdownConfig)
    ib: IbConfig | None = None
    mqtt: MqttConfig = msgspec.field(default_factory=MqttConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    explain: ExplainConfig = msgspec.field(default_factory=ExplainConfig)
    # realtime: each bar batch runs at SCHED_FIFO 1 until its orders are out, the ML scorer's call
    # and the CLIP pool's chunks of it included (daemon/runtime.py
    # OrderPathPriority: removes the wait for a CPU on a busy machine; needs CAP_SYS_NICE or
    # RLIMIT_RTPRIO >= 1, else one `runtime.realtime_refused` line and normal priority).
    order_path_priority: Literal["normal", "realtime"] = "normal"
    ray: RayConfig | None = None  # backtest/evaluate on a Ray cluster (see daemon/cluster)

    def state_path(self, name: str, *, base: Path | None = None) -> Path:
        """Resolve a file name against state_dir (relative state_dir against base or cwd)."""
        state = Path(self.state_dir)
        if not state.is_absolute() and base is not None:
            state = base / state
        p = Path(name)
        return p if p.is_absolute() else state / p


def _check_live(cfg: AppConfig) -> str | None:
    if cfg.mode == "ib-live" and not cfg.confirm_live:
        return "mode ib-live trades real money: set `confirm_live: true` to confirm"
    return None


def _check_feed(cfg: AppConfig) -> str | None:
    if cfg.feed.kind == "replay" and cfg.feed.replay is None:
        return "feed.kind is replay but feed.replay is missing: add feed.replay.path"
    if cfg.feed.kind == "mqtt" and cfg.mqtt.bar_source is None:
        return (
            "feed.kind is mqtt but mqtt.bar_source is missing: add mqtt.bar_source: {topic: bars}"
        )
    if cfg.mode == "paper-sim" and cfg.feed.kind not in ("sim", "replay", "mqtt"):
        return f"mode paper-sim needs feed.kind sim, replay or mqtt, not {cfg.feed.kind}"
    return None


def _check_ib(cfg: AppConfig) -> str | None:
    uses_ib = cfg.mode in ("ib-paper", "ib-live") or cfg.feed.kind == "ib"
    if not uses_ib:
        return None
    if cfg.ib is None:
        return f"mode {cfg.mode} needs IB Gateway settings: add an ib: section with contracts"
    if cfg.mode in ("ib-paper", "ib-live") and cfg.feed.kind != "ib":
        return f"mode {cfg.mode} trades through IB: set feed.kind: ib"
    if cfg.mode == "ib-live" and cfg.ib.port == 4002:
        return "mode ib-live with ib.port 4002 (the paper Gateway port): use 4001 for live"
    return check_ib(cfg.ib, bar_seconds=cfg.bars.bar_seconds)


def _check_mqtt(cfg: AppConfig) -> str | None:
    return check_mqtt(cfg.mqtt) if cfg.mqtt.enabled or cfg.feed.kind == "mqtt" else None


def _check_bar_seconds(cfg: AppConfig) -> str | None:
    sim_seconds = cfg.feed.sim.market.bar_seconds
    if cfg.feed.kind == "sim" and sim_seconds != cfg.bars.bar_seconds:
        return (
            f"feed.sim.market.bar_seconds ({sim_seconds}) differs from bars.bar_seconds "
            f"({cfg.bars.bar_seconds}): make them equal"
        )
    return None


def _check_strategy_bar_seconds(cfg: AppConfig) -> str | None:
    if cfg.strategy.bar_seconds != cfg.bars.bar_seconds:
        return (
            f"strategy.bar_seconds ({cfg.strategy.bar_seconds}) differs from bars.bar_seconds "
            f"({cfg.bars.bar_seconds}): make them equal"
        )
    return None


# Topic-safe and file-name-safe: the account names MQTT topics, order ids and log lines.
ACCOUNT_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_STRING = 4_096
# Windows longer than this many seconds of bars push dates out of range (sim start, warm-up).
MAX_WINDOW_SECONDS = 20 * 366 * 86_400


def _check_account(cfg: AppConfig) -> str | None:
    if not ACCOUNT_PATTERN.match(cfg.account):
        shown = cfg.account if len(cfg.account) <= 40 else cfg.account[:40] + "..."
        return (
            f"account {shown!r} ({len(cfg.account)} chars): use 1-64 letters, digits, '.', '_' "
            "or '-' (it names MQTT topics and order ids)"
        )
    return None


def _check_window_span(cfg: AppConfig) -> str | None:
    span = cfg.bars.window * cfg.bars.bar_seconds
    if span > MAX_WINDOW_SECONDS:
        return (
            f"bars.window ({cfg.bars.window}) x bars.bar_seconds ({cfg.bars.bar_seconds}) is "
            f"{span} s, over {MAX_WINDOW_SECONDS} s (20 years): dates would be out of range"
        )
    return None


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted key, value) of a config as plain data; lists count as one leaf per item."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, value


def _check_values(cfg: AppConfig) -> str | None:
    """No infinite or NaN number (risk limits included), no string longer than MAX_STRING."""
    for key, value in _leaves(msgspec.to_builtins(cfg)):
        if isinstance(value, float) and not math.isfinite(value):
            return f"{key} is {value}: use a finite number"
        if isinstance(value, str) and len(value) > MAX_STRING:
            return f"{key} is {len(value)} characters long, over the limit of {MAX_STRING}"
    return None


_CHECKS = (
    _check_values,
    _check_account,
    _check_window_span,
    _check_live,
    _check_feed,
    _check_ib,
    _check_bar_seconds,
    _check_strategy_bar_seconds,
    _check_mqtt,
)


def validate(cfg: AppConfig, *, source: str = "config") -> AppConfig:
    """Run the cross-field rules; raise ConfigError with a sentence a human can act on."""
    for check in _CHECKS:
        problem = check(cfg)
        if problem:
            msg = f"{source}: {problem}"
            raise ConfigError(msg)
    return cfg


def decode_config(raw: bytes | str, *, source: str = "config") -> AppConfig:
    """Decode YAML text into a validated AppConfig; every error is one line naming the key path."""
    try:
        cfg = msgspec.yaml.decode(raw, type=AppConfig)
    except msgspec.ValidationError as e:
        msg = f"{source}: {e}{enum_hint(AppConfig, e)}"
        raise ConfigError(msg) from None
    except msgspec.DecodeError as e:
        msg = f"{source}: not valid YAML: {_one_line(str(e))}"
        raise ConfigError(msg) from None
    return validate(cfg, source=source)


def load_config(path: str | Path) -> AppConfig:
    """Read and validate a YAML config file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        msg = f"{p}: config file not found"
        raise ConfigError(msg) from None
    except OSError as e:
        msg = f"{p}: cannot read config: {e.strerror}"
        raise ConfigError(msg) from None
    if not raw.strip():
        msg = f"{p}: config file is empty"
        raise ConfigError(msg)
    return decode_config(raw, source=str(p))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _flat(value: Any) -> dict[str, Any]:
    return dict(_leaves(value))


def _present(raw: Any, key: str) -> bool:
    """Whether a dotted key is set by the raw file (a parent set to a scalar or list counts)."""
    node = raw
    for part in re.split(r"\.|(?=\[)", key):
        if not isinstance(node, dict):
            return True
        if part.startswith("["):
            return True
        if part not in node:
            return False
        node = node[part]
    return True


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in over.items()}}
    return over


# Set on the command line (`vlmtrader run --state-dir ... --log-format ...`), not in the file:
# a reload keeps the running values.
COMMAND_LINE_KEYS = ("state_dir", "log.format", "feed.sim.speed", "feed.sim.max_bars")


def _keep_command_line(new: AppConfig, running: AppConfig) -> AppConfig:
    replace = msgspec.structs.replace
    sim = replace(new.feed.sim, speed=running.feed.sim.speed, max_bars=running.feed.sim.max_bars)
    return replace(
        new,
        state_dir=running.state_dir,
        log=replace(new.log, format=running.log.format),
        feed=replace(new.feed, sim=sim),
    )


def reload_config(path: str | Path, running: AppConfig) -> tuple[AppConfig, list[str]]:
    """Read the config again for a reload (SIGHUP); returns the new config and every changed key.

    A file marked `partial: true` is laid over the running config. Any other file must set every
    key the running config has away from its default: omitting one would reset it (a risk limit,
    say) silently, so the reload is refused with ConfigError naming the keys."""
    p = Path(path)
    load_config(p)  # every check a full start makes, on the file as it stands
    raw = msgspec.yaml.decode(p.read_bytes())
    current = msgspec.to_builtins(running)
    if isinstance(raw, dict) and raw.get("partial") is True:
        new = decode_config(msgspec.yaml.encode(_merge(current, raw)), source=str(p))
    else:
        new = load_config(p)
        defaults = _flat(msgspec.to_builtins(AppConfig()))
        omitted = sorted(
            key
            for key, value in _flat(current).items()
            if key != "partial"
            and key not in COMMAND_LINE_KEYS
            and defaults.get(key, object()) != value
            and not _present(raw, key)
        )
        if omitted:
            shown = ", ".join(omitted[:10]) + (" ..." if len(omitted) > 10 else "")
            msg = (
                f"{p}: reload refused, the file omits keys the running config sets ({shown}); "
                "write them out, or mark the file `partial: true` to keep their running values"
            )
            raise ConfigError(msg)
    new = _keep_command_line(new, running)
    before, after = _flat(current), _flat(msgspec.to_builtins(new))
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return new, changed
