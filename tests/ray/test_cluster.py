"""The two-node cluster fixture itself: both nodes serve tasks, and the second is addressable."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.integration]


def test_cluster_when_started_then_two_nodes_run_tasks(ray_cluster):
    ray.init(address=ray_cluster.address, logging_level="ERROR", log_to_driver=False)
    try:

        @ray.remote(num_cpus=1)
        def where() -> str:
            return ray.get_runtime_context().get_node_id()

        alive = [n for n in ray.nodes() if n["Alive"]]
        on_second = ray.get(where.options(resources={"node2": 1}).remote())
        second = next(n["NodeID"] for n in alive if "node2" in n["Resources"])
        assert len(alive) == 2
        assert on_second == second
    finally:
        ray.shutdown()
