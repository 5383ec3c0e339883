"""Connect to Ray for one command (or start a local one), and say in one line why that failed."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from daemon.cluster.config import LOCAL, RayConfig
from daemon.cluster.errors import ClusterError

log = structlog.get_logger("daemon.cluster")

REACH_TIMEOUT_S = 5.0


def import_ray(origin: str = "--ray") -> Any:
    """The ray module, or a ClusterError saying how to install it (origin: what asked for Ray,
    daemon.cluster.config.ray_origin)."""
    try:
        import ray
    except ImportError:
        msg = f"{origin} needs the ray extra: pip install 'vlmtrader[ray]'"
        raise ClusterError(msg) from None
    return ray


def _host_port(address: str, origin: str) -> tuple[str, int] | None:
    """(host, port) of "HOST:PORT" or "ray://HOST:PORT"; None for "auto"/"local"."""
    if address in (LOCAL, "auto"):
        return None
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        msg = f"{origin} {address}: not an address (use HOST:PORT, ray://HOST:10001, auto or local)"
        raise ClusterError(msg)
    return host, int(port)


def check_reachable(address: str, origin: str = "--ray") -> None:
    """Fail at once (instead of Ray's minute of retries) when nothing listens at the address."""
    target = _host_port(address, origin)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=REACH_TIMEOUT_S):
            pass
    except OSError as e:
        msg = f"{origin} {address}: no Ray cluster answers there ({e.strerror or e})"
        raise ClusterError(msg) from None


@contextmanager
def ray_session(cfg: RayConfig, *, origin: str = "--ray") -> Iterator[Any]:
    """ray.init for the run (a local Ray when address is "local"), ray.shutdown after it; its
    errors name the address as coming from origin (daemon.cluster.config.ray_origin)."""
    ray = import_ray(origin)
    check_reachable(cfg.address, origin)
    if ray.is_initialized():  # a caller (a test, a notebook) already connected: use its session
        yield ray
        return
    kwargs: dict[str, Any] = {
        "logging_level": "ERROR",
        "log_to_driver": False,
        "include_dashboard": False,
    }
    if cfg.address != LOCAL:  # a local Ray's workers inherit this process's environment
        kwargs["address"] = cfg.address
        kwargs.pop("include_dashboard")
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        msg = f"{origin} {cfg.address}: could not connect ({first})"
        raise ClusterError(msg) from None
    try:
        resources = ray.cluster_resources()
        log.info("ray.connected", address=cfg.address, nodes=len(ray.nodes()),
                 cpus=resources.get("CPU", 0), gpus=resources.get("GPU", 0))  # fmt: skip
        yield ray
    finally:
        ray.shutdown()
