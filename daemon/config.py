"""AppConfig: the whole daemon's configuration, composed from each package's *Config, validated once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec

from daemon.api.config import ApiConfig
from daemon.bus.config import MqttConfig
from daemon.bus.config import check as check_mqtt
from daemon.errors import ConfigError
from daemon.feeds.replay import ReplayFeedConfig
from daemon.feeds.sim import SimFeedConfig
from daemon.ib_config import IbConfig, check_ib
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
    """rules: TA-Lib scorer; ml: the model bundle (CLIP + XGBoost + fusion) or refuse to start;
    auto: the bundle when it loads, else the rule scorer while `vlmtrader model bootstrap` builds it.

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


class ShutdownConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    cancel_open_orders: bool = True
    timeout_seconds: PositiveFloat = 10.0


class AppConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    mode: Mode = "paper-sim"
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


_CHECKS = (
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
        msg = f"{source}: {e}"
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
