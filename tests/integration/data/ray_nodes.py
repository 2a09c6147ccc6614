"""Ray driver for the runtime tests: prints the cluster it sees and where pinned tasks ran (JSON)."""

import json
import os

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.init()
nodes = [node for node in ray.nodes() if node["Alive"]]


@ray.remote(num_cpus=1)
def host() -> str:
    return os.uname().nodename


pinned = [
    host.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote()
    for node in nodes
]
print(
    json.dumps(
        {
            "nodes": len(nodes),
            "gpus": sorted(node["Resources"].get("GPU", 0) for node in nodes),
            "task_hosts": sorted(ray.get(pinned)),
        }
    )
)
