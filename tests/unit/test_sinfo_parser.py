import pytest

from slurm.errors import SlurmOutputError
from slurm.sinfo_parser import parse_sinfo_nodes, partition_capacities
from slurm.squeue_parser import count_pending_by_partition
from tests.unit.slurm_output_fixtures import recorded


def capacities() -> dict:
    nodes = parse_sinfo_nodes(recorded("sinfo_nodes.txt"))
    pending = count_pending_by_partition(recorded("squeue_pending_partitions.txt"))
    return {capacity.name: capacity for capacity in partition_capacities(nodes, pending)}


def test_gpu_partition_with_a_running_gpu_job() -> None:
    gpu = capacities()["gpu"]
    assert (gpu.total_nodes, gpu.idle_nodes, gpu.allocated_nodes) == (4, 2, 2)
    assert (gpu.total_gpus, gpu.allocated_gpus, gpu.idle_gpus) == (16, 6, 10)
    assert (gpu.pending_jobs, gpu.gpu_types) == (2, ("h100",))


def test_default_partition_marker_is_dropped_and_cpu_nodes_have_no_gpus() -> None:
    cpu = capacities()["cpu"]
    assert (cpu.total_nodes, cpu.idle_nodes, cpu.allocated_nodes) == (2, 1, 1)
    assert (cpu.total_gpus, cpu.idle_gpus, cpu.gpu_types, cpu.pending_jobs) == (0, 0, (), 3)


def test_partitions_keep_sinfo_order() -> None:
    assert list(capacities()) == ["cpu", "gpu"]


def test_used_gpus_with_index_lists_and_several_types() -> None:
    # Shapes Slurm prints on nodes with two GPU types; not present on the dev cluster.
    (node,) = parse_sinfo_nodes(
        "n1|p|mixed|gpu:a100:2,gpu:h100:2(S:0-1)|gpu:a100:1(IDX:0),gpu:h100:2(IDX:0,1)|\n"
    )
    assert (node.gpus, node.gpus_used, node.gpu_types) == (4, 3, ("a100", "h100"))


def test_down_and_drained_nodes_are_neither_idle_nor_allocated() -> None:
    text = (
        recorded("sinfo_nodes.txt")
        .replace("gpu03|gpu|idle|", "gpu03|gpu|down*|")
        .replace("gpu04|gpu|idle|", "gpu04|gpu|drained|")
    )
    gpu = {c.name: c for c in partition_capacities(parse_sinfo_nodes(text), {})}["gpu"]
    assert (gpu.total_nodes, gpu.idle_nodes, gpu.allocated_nodes) == (4, 0, 2)
    assert (gpu.total_gpus, gpu.allocated_gpus, gpu.idle_gpus) == (16, 6, 2)


def test_idle_node_that_does_not_respond_is_not_idle() -> None:
    text = recorded("sinfo_nodes.txt").replace("cpu02|cpu*|idle|", "cpu02|cpu*|idle*|")
    cpu = {c.name: c for c in partition_capacities(parse_sinfo_nodes(text), {})}["cpu"]
    assert cpu.idle_nodes == 0


def test_unparseable_gres_is_an_error() -> None:
    with pytest.raises(SlurmOutputError, match="gres"):
        parse_sinfo_nodes("n1|p|idle|gpu:h100:four|gpu:0|\n")


def test_missing_trailing_separator_is_an_error() -> None:
    with pytest.raises(SlurmOutputError, match="unexpected sinfo line"):
        parse_sinfo_nodes("n1|p|idle|(null)|gpu:0\n")
