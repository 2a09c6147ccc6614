"""One renderer per runtime: a BatchJob becomes the script lines after the #SBATCH directives.

Every renderer is a pure function of the BatchJob, which slurm.job_validation has checked; user
values reach the shell only through ``shlex.quote``.
"""

from __future__ import annotations

from slurm.batch_job import BatchJob, JuliaRuntime, MpiRuntime, RayRuntime, ScriptRuntime, TorchrunRuntime
from slurm.runtimes.julia import render_julia
from slurm.runtimes.mpi import render_mpi
from slurm.runtimes.ray import render_ray
from slurm.runtimes.script import render_script
from slurm.runtimes.torchrun import render_torchrun


def render_runtime(job: BatchJob) -> list[str]:
    """The lines that start the job's program, for its runtime."""
    runtime = job.runtime
    if isinstance(runtime, MpiRuntime):
        return render_mpi(job, runtime)
    if isinstance(runtime, RayRuntime):
        return render_ray(job, runtime)
    if isinstance(runtime, JuliaRuntime):
        return render_julia(job, runtime)
    if isinstance(runtime, TorchrunRuntime):
        return render_torchrun(job, runtime)
    assert isinstance(runtime, ScriptRuntime)
    return render_script(job)
