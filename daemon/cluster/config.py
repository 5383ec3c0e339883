"""RayConfig: where and how the research commands run on Ray (`ray:` in their YAML, `--ray` on the CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import msgspec

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]

LOCAL = "local"  # `--ray` alone: start a Ray on this machine for the run


class RayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """address: "local" starts Ray on this machine; "auto" joins the cluster this machine belongs
    to; "HOST:PORT" (a head's GCS port) or "ray://HOST:10001" (Ray Client) joins that one.
    cpus_per_actor / gpus_per_actor: what each CLIP scoring actor (one warm engine) reserves;
    actors: how many (0: as many as the cluster's CPUs / cpus_per_actor allow);
    resources: custom Ray resources each actor needs (e.g. {"bigmem": 1} pins them to nodes
    started with `ray start --resources '{"bigmem": 4}'`).
    shard_bars: bars of one symbol per scoring shard; max_retries: per task and actor call."""

    address: str = LOCAL
    cpus_per_actor: NonNegativeFloat = 1.0
    gpus_per_actor: NonNegativeFloat = 0.0
    actors: NonNegativeInt = 0
    resources: dict[str, NonNegativeFloat] = msgspec.field(default_factory=dict)
    shard_bars: PositiveInt = 2000
    max_retries: NonNegativeInt = 3


class _RaySection(msgspec.Struct, frozen=True, kw_only=True):
    """A YAML document's `ray:` section alone (its other keys are another config's)."""

    ray: RayConfig | None = None


def ray_section(document: Any) -> RayConfig | None:
    """A decoded YAML document's `ray:` section as a RayConfig (None: absent); a bad value is a
    msgspec.ValidationError naming it under `$.ray`, as `vlmtrader backtest` reports its own."""
    if not isinstance(document, dict) or "ray" not in document:
        return None
    return msgspec.convert({"ray": document["ray"]}, type=_RaySection).ray


def ray_config(flag: str | None, section: Any) -> RayConfig | None:
    """The run's RayConfig from `--ray [ADDRESS]` (None: not given) and a YAML `ray:` section
    (None: absent); the flag's address wins. None: run in this process, without Ray."""
    if flag is None and section is None:
        return None
    cfg = (
        section
        if isinstance(section, RayConfig)
        else msgspec.convert(section or {}, type=RayConfig)
    )
    if flag is not None and flag != LOCAL:
        cfg = msgspec.structs.replace(cfg, address=flag)
    return cfg


def ray_origin(flag: str | None, section: Any, source: Path | str | None = None) -> str:
    """Where the run's Ray address came from, as its errors name it: "--ray" (the flag's address,
    or the local Ray `--ray` alone starts) or "SOURCE: ray.address" (the YAML `ray:` section's,
    which a flag without an address keeps); pairs with ray_config(flag, section)."""
    address = section.address if isinstance(section, RayConfig) else None
    if isinstance(section, dict):
        address = section.get("address")
    from_section = section is not None and (
        flag is None or (flag == LOCAL and address not in (None, LOCAL))
    )
    if not from_section:
        return "--ray"
    return f"{source}: ray.address" if source is not None else "ray.address"
