"""A real two-node Ray cluster on loopback for the tests under tests/ray (session-scoped).

The head (`ray start --head`) and a second node (`ray start --address`, resource `node2`) each get
their own temp dir under /tmp (short: Ray's unix sockets must fit 107 bytes) and their own free
ports, so clusters of other test runs on the same machine are never touched. Both nodes run as
`ray start --block` children of this process; teardown sends them SIGTERM (Ray's own shutdown of
their raylet, object store and workers) and then SIGKILLs, by pid, any process still naming the
cluster's temp dirs. `ray stop` is never called: it stops every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the ray extra is not installed: pip install '.[ray]'")

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")
START_DEADLINE_S = 90.0
OBJECT_STORE_BYTES = 150 * 1024 * 1024
WORKER_PORTS = 24


@dataclass
class RayNode:
    """One `ray start --block` process and what it owns."""

    name: str
    temp_dir: Path
    process: subprocess.Popen[bytes]
    log: Path

    def pids(self) -> list[int]:
        """This node's processes (raylet, workers, ...): every live process naming its temp dir."""
        mine = str(self.temp_dir)
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if mine in cmdline:
                found.append(int(entry.name))
        return found


@dataclass
class RayCluster:
    """The running cluster: its GCS address (for `ray.init(address=...)` and `--ray ADDRESS`),
    its Ray Client address and its nodes (head first)."""

    address: str
    client_address: str
    nodes: list[RayNode] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def head(self) -> RayNode:
        return self.nodes[0]

    @property
    def second(self) -> RayNode:
        return self.nodes[1]


def free_ports(n: int) -> list[int]:
    """n distinct ports free on 127.0.0.1 right now (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ray_env(home: Path) -> dict[str, str]:
    """The nodes' environment: this checkout first on PYTHONPATH (workers import its code), no
    usage stats, one thread per BLAS/torch pool, and a HOME of their own: a ~/.ray/auth_token
    left by another Ray user on this machine makes the GCS demand a token our clients never send."""
    path = os.environ.get("PYTHONPATH", "")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    return {
        **env,
        "HOME": str(home),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT),
        "RAY_USAGE_STATS_ENABLED": "0",
        "OMP_NUM_THREADS": "1",
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    }


def _node_args(ports: list[int]) -> list[str]:
    node_manager, object_manager, listen, grpc, runtime_env, metrics, *workers = ports
    return [
        "--node-ip-address=127.0.0.1",
        f"--node-manager-port={node_manager}",
        f"--object-manager-port={object_manager}",
        f"--dashboard-agent-listen-port={listen}",
        f"--dashboard-agent-grpc-port={grpc}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--metrics-export-port={metrics}",
        f"--worker-port-list={','.join(map(str, workers))}",
        "--num-cpus=1",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        "--disable-usage-stats",
        "--block",
    ]


def _start(name: str, args: list[str], env: dict[str, str]) -> RayNode:
    temp_dir = Path(tempfile.mkdtemp(prefix=f"vtray-{name}-", dir="/tmp"))
    log = temp_dir.with_suffix(".log")
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(RAY), "start", f"--temp-dir={temp_dir}", *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
    return RayNode(name=name, temp_dir=temp_dir, process=process, log=log)


def _alive_nodes(address: str, env: dict[str, str]) -> int:
    code = (
        f"import ray; ray.init(address={address!r}, logging_level='ERROR', log_to_driver=False); "
        "print('alive:', sum(1 for n in ray.nodes() if n['Alive']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith("alive:"):
            return int(line.split()[1])
    return 0


def _wait_for(node: RayNode, ready: Path | None, deadline: float) -> None:
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            pytest.fail(f"ray node {node.name} exited: {node.log.read_text()[-2000:]}")
        if ready is None or ready.exists():
            return
        time.sleep(0.2)
    pytest.fail(
        f"ray node {node.name} not ready in {START_DEADLINE_S} s: {node.log.read_text()[-2000:]}"
    )


def stop_node(node: RayNode) -> None:
    """SIGTERM the node's `ray start --block` (Ray shuts its processes down), then SIGKILL by pid
    whatever still names the node's temp dir; the temp dir is removed."""
    if node.process.poll() is None:
        node.process.send_signal(signal.SIGTERM)
        try:
            node.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait(timeout=10)
    for pid in node.pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(node.temp_dir, ignore_errors=True)
    node.log.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A two-node Ray cluster on 127.0.0.1 (1 CPU each; the second has resource node2: 1)."""
    home = Path(tempfile.mkdtemp(prefix="vtray-home-", dir="/tmp"))
    env = ray_env(home)
    gcs, client, *head_ports = free_ports(2 + 6 + WORKER_PORTS)
    address = f"127.0.0.1:{gcs}"
    cluster = RayCluster(address=address, client_address=f"ray://127.0.0.1:{client}", env=env)
    deadline = time.monotonic() + START_DEADLINE_S
    try:
        head = _start(
            "head",
            [
                "--head",
                f"--port={gcs}",
                f"--ray-client-server-port={client}",
                "--include-dashboard=false",
                *_node_args(head_ports),
            ],
            env,
        )
        cluster.nodes.append(head)
        _wait_for(head, head.temp_dir / "ray_current_cluster", deadline)
        second = _start(
            "node2",
            [
                f"--address={address}",
                '--resources={"node2": 1}',
                *_node_args(free_ports(6 + WORKER_PORTS)),
            ],
            env,
        )
        cluster.nodes.append(second)
        while _alive_nodes(address, env) < 2:
            _wait_for(second, None, deadline)
            if time.monotonic() > deadline:
                pytest.fail(f"the second ray node never joined: {second.log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield cluster
    finally:
        for node in reversed(cluster.nodes):
            stop_node(node)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_address(ray_cluster: RayCluster) -> str:
    """The two-node cluster's GCS address, as `--ray ADDRESS` takes it."""
    return ray_cluster.address
