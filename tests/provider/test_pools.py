"""The NodePool contract's elastic half, driven by the scheduler: nodes asked for, recorded, claimed, released.

``StartingLocalPool`` is local slots that "start" when asked: the shape of an elastic pool
without a cloud (cloud VMs are a pool kind of their own). A fixed pool is asked for nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow_batchai.pools.local import LocalNodePool
from airflow_batchai.service import Service, Settings
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import custom_job, wait_until


class StartingLocalPool(LocalNodePool):
    elastic = True

    def __init__(self, home: str | os.PathLike[str], maximum: int) -> None:
        super().__init__(home, count=0)
        self.maximum = maximum
        self.asked: list[int] = []
        self.released: list[str] = []

    def capacity(self, vm_size: str | None = None, max_age_s: float = 0.0) -> int:
        return self.maximum

    def vm_size_problem(self, vm_size: str | None) -> str | None:
        return None  # any size can be started

    def inventory(self) -> list[tuple[str, str, str, int]]:
        return [machine for machine in super().inventory() if machine[0] not in self.released]  # a stopped machine is gone

    def grow(self, count: int, vm_size: str | None) -> list[str]:
        self.asked.append(count)
        started = [f"local-{index}" for index in range(self.count, min(self.maximum, self.count + count))]
        self.count += len(started)
        return started

    def release(self, node_id: str) -> None:
        assert node_id not in self.released, f"{node_id} released twice"
        self.released.append(node_id)


def test_an_elastic_pool_starts_the_nodes_a_gang_job_needs_and_gets_them_back_when_the_cluster_shrinks(home: Path) -> None:
    pool = StartingLocalPool(home, maximum=3)
    service = Service.embedded(home, pool=pool, settings=Settings(heartbeat_timeout_s=10, launch_timeout_s=20))
    auto = {"autoScale": {"minimumNodeCount": 0, "maximumNodeCount": 3, "idleSecondsBeforeScaledown": 0}}
    service.create_cluster("elastic", load_cluster_spec({"scaleSettings": auto}, environ={}))
    service.create_job("elastic", "pair", load_job_spec({"properties": custom_job("echo rank", nodes=2)}, environ={}), "e")
    done = service.wait_job("pair", "e", timeout_s=60, poll_s=0.1)
    assert done.execution_state == "succeeded", done
    assert pool.count == 2 and sum(pool.asked) == 2  # asked once for the two it lacked, not again while they joined
    wait_until(lambda: service.show_cluster("elastic").current_node_count == 0, 30, 0.2, what="the idle nodes to leave")
    assert sorted(pool.released) == ["local-0", "local-1"]
