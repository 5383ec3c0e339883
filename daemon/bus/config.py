"""MqttConfig: broker address, credentials, TLS, which events go out, and the control/bar topics."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import msgspec

from daemon.errors import ConfigError

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
# One topic level: no separators or wildcards (checked again in _check_topic_level with a sentence).
TopicLevel = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]

DEFAULT_EVENTS = (
    "signal.*",
    "order.*",
    "fill.*",
    "risk.rejected",
    "trading_state.*",
    "bundle.*",
    "drift.*",
    "feed.*",
    "daemon.*",
    "config.reload*",
    "control.*",
    "telemetry.*",
)
DEFAULT_QOS1_EVENTS = ("order.*", "fill.*", "trading_state.*", "daemon.*", "control.*", "bundle.*")


class MqttTlsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """TLS to the broker; with no files set the system CA store verifies the broker."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False  # skip hostname verification (self-signed test brokers only)


class MqttBarSourceConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Bars published by another process on `<prefix>/<account>/<topic>`: one message, one batch."""

    topic: TopicLevel = "bars"
    max_message_bytes: PositiveInt = 262_144
    queue_size: PositiveInt = 1_000
    # A batch closing further ahead of this machine's clock is rejected ("future"): accepted, it
    # would make every real batch after it look out of order and silence the feed.
    max_future_seconds: Annotated[float, msgspec.Meta(ge=0)] = 300.0


class MqttConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where events go and commands come from; secrets come from the environment or a file."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Port = 1883
    prefix: TopicLevel = "vlmtrader"
    client_id: str = ""  # empty: "vlmtrader-<account>"
    username: str | None = None
    username_env: str = "VLMTRADER_MQTT_USERNAME"
    password_env: str = "VLMTRADER_MQTT_PASSWORD"
    password_file: str | None = None
    tls: MqttTlsConfig | None = None
    keepalive_seconds: PositiveInt = 30
    queue_size: PositiveInt = 10_000
    events: tuple[str, ...] = DEFAULT_EVENTS
    qos1_events: tuple[str, ...] = DEFAULT_QOS1_EVENTS
    control: bool = True
    max_command_bytes: PositiveInt = 4_096
    status_interval_seconds: NonNegativeFloat = 30.0  # 0: status only on connect and stop
    reconnect_min_seconds: PositiveFloat = 0.5
    # Cap of the (jittered) reconnect backoff: back within a few seconds of the broker answering.
    reconnect_max_seconds: PositiveFloat = 5.0
    publish_timeout_seconds: PositiveFloat = 5.0
    stop_timeout_seconds: PositiveFloat = 3.0
    bar_source: MqttBarSourceConfig | None = None


class Topics(msgspec.Struct, frozen=True, kw_only=True):
    """The topic names of one account."""

    base: str
    control: str
    status: str
    bars: str

    def event(self, name: str) -> str:
        return f"{self.base}/events/{name}"


def topics(config: MqttConfig, account: str) -> Topics:
    """Build the topic names; raise ConfigError when prefix or account would break a topic."""
    _check_topic_level("mqtt.prefix", config.prefix)
    _check_topic_level("account", account)
    bars = config.bar_source.topic if config.bar_source is not None else "bars"
    _check_topic_level("mqtt.bar_source.topic", bars)
    base = f"{config.prefix}/{account}"
    return Topics(
        base=base, control=f"{base}/control", status=f"{base}/status", bars=f"{base}/{bars}"
    )


def _check_topic_level(key: str, value: str) -> None:
    bad = [c for c in ("/", "+", "#", "\0") if c in value]
    if not value or bad or value != value.strip():
        msg = f"{key}: {value!r} cannot be an MQTT topic level: use letters, digits, '-' or '_'"
        raise ConfigError(msg)


def check(config: MqttConfig) -> str | None:
    """Cross-field rules of MqttConfig; None when fine, else a sentence naming the fix."""
    if config.reconnect_min_seconds > config.reconnect_max_seconds:
        return "mqtt.reconnect_min_seconds is above mqtt.reconnect_max_seconds: swap them"
    if config.tls is not None and (config.tls.cert_file is None) != (config.tls.key_file is None):
        return "mqtt.tls: set both cert_file and key_file for a client certificate, or neither"
    return None


def credentials(
    config: MqttConfig, env: Mapping[str, str] | None = None
) -> tuple[str | None, str | None]:
    """Username and password: username from config or env; password from env, else password_file."""
    environ = os.environ if env is None else env
    username = config.username or environ.get(config.username_env) or None
    password = environ.get(config.password_env) or None
    if password is None and config.password_file:
        path = Path(config.password_file)
        try:
            password = path.read_text().strip() or None
        except OSError as e:
            msg = f"mqtt.password_file: cannot read {path}: {e.strerror}"
            raise ConfigError(msg) from None
        if password is None:
            msg = f"mqtt.password_file: {path} is empty"
            raise ConfigError(msg)
    if password is not None and username is None:
        msg = (
            f"mqtt: a password is set but no username: set mqtt.username or ${config.username_env}"
        )
        raise ConfigError(msg)
    return username, password


def tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    """The TLS context of mqtt.tls (None: plain TCP); the broker is verified against ca_file."""
    tls = config.tls
    if tls is None:
        return None
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file and tls.key_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure:
        context.check_hostname = False
    return context
