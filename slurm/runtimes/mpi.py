"""The ``mpi`` runtime: ``srun --mpi=pmix`` (default) or Open MPI's ``mpirun`` in the allocation."""

from __future__ import annotations

import shlex

from slurm.batch_job import BatchJob, MpiRuntime
from slurm.runtimes.node_network import fabric_exports


def render_mpi(job: BatchJob, runtime: MpiRuntime) -> list[str]:
    """Launch nodes x tasks_per_node ranks of ``job.command``, placement passed explicitly."""
    command = shlex.join(job.command or ())
    lines = fabric_exports(job)
    if runtime.launcher == "srun":
        # Since Slurm 22.05 srun no longer inherits --cpus-per-task from the job: say it again.
        options = [
            "--mpi=pmix",
            f"--nodes={job.nodes}",
            f"--ntasks-per-node={job.tasks_per_node}",
            f"--cpus-per-task={job.cpus_per_task}",
        ]
        if runtime.gpu_bind is not None and job.gpus_per_node > 0:
            options.append(f"--gpu-bind={runtime.gpu_bind}")
        return [*lines, f"exec srun {' '.join(options)} {command}"]
    ranks = job.nodes * job.tasks_per_node
    return [
        *lines,
        # mpirun starts one daemon per node with srun; each needs every CPU its ranks will use.
        f"export SRUN_CPUS_PER_TASK={job.tasks_per_node * job.cpus_per_task}",
        f"exec mpirun -np {ranks} --map-by ppr:{job.tasks_per_node}:node:PE={job.cpus_per_task} "
        f"--bind-to core {command}",
    ]
