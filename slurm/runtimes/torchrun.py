"""The ``torchrun`` runtime: one torch.distributed.run agent per node, c10d rendezvous on the first."""

from __future__ import annotations

import shlex

from slurm.batch_job import BatchJob, TorchrunRuntime
from slurm.runtimes.node_network import (
    EXEC_WITH_NODE_IP,
    NODE_IP_FUNCTION,
    fabric_exports,
    fabric_interface,
    job_port_base_lines,
)


def torchrun_nproc_per_node(job: BatchJob, runtime: TorchrunRuntime) -> int:
    """Processes per node: as asked, else one per GPU, else one per task."""
    if runtime.nproc_per_node is not None:
        return runtime.nproc_per_node
    return job.gpus_per_node or job.tasks_per_node


def render_torchrun(job: BatchJob, runtime: TorchrunRuntime) -> list[str]:
    """One srun task per node runs ``python -m torch.distributed.run`` with ``job.command``."""
    interface = fabric_interface(job)
    lines = [*fabric_exports(job), NODE_IP_FUNCTION, *job_port_base_lines()]
    if interface:
        lines.append(f"export GLOO_SOCKET_IFNAME={shlex.quote(interface)}")
    lines += [
        # The batch step runs on the first node, which hosts the rendezvous store.
        f"sgw_head_ip=$(sgw_node_ip {shlex.quote(interface)})",
        f"exec srun --nodes={job.nodes} --ntasks={job.nodes} --ntasks-per-node=1 "
        f"--cpus-per-task={job.tasks_per_node * job.cpus_per_task} "
        # PET_LOCAL_ADDR (torchrun's --local-addr): each agent's own address on the fabric, which
        # the workers use to reach rank 0, instead of a host name that may not resolve.
        f"bash -c {shlex.quote(EXEC_WITH_NODE_IP)} sgw-node-ip {shlex.quote(interface)} PET_LOCAL_ADDR '' "
        f"{shlex.quote(runtime.python)} -m torch.distributed.run --nnodes={job.nodes} "
        f"--nproc-per-node={torchrun_nproc_per_node(job, runtime)} --rdzv-backend=c10d "
        '--rdzv-endpoint="$sgw_head_ip:$sgw_port_base" --rdzv-id="$SLURM_JOB_ID" '
        + shlex.join(job.command or ()),
    ]
    return lines
