"""The ``julia`` runtime: the driver in the batch step, workers started the SlurmClusterManager way.

``srun julia --worker`` starts one worker per task (binding to the fabric's address); each
prints ``julia_worker:<port>#<address>`` and the driver, a small bootstrap around the user's
script, connects to them with a ClusterManager before ``include``-ing the script. The cookie
travels in a file only the job's user can read, never on a command line. The depot is on
shared storage and the project is precompiled once, before any worker starts, so workers never
race to precompile into the same depot.
"""

from __future__ import annotations

import shlex

from slurm.batch_job import BatchJob, JuliaRuntime
from slurm.runtimes.background_steps import WATCHDOG_LINES
from slurm.runtimes.node_network import EXEC_WITH_NODE_IP, NODE_IP_FUNCTION, fabric_exports, fabric_interface

DEPOT_DIR_NAME = ".julia-depot"
# A worker: bound to the fabric's address on its node, the cookie on stdin.
WORKER_LAUNCH = EXEC_WITH_NODE_IP + ' < "$SGW_JULIA_COOKIE"'
# Julia's cookie is at most 16 bytes (Distributed.HDR_COOKIE_LEN).
COOKIE_BYTES = 8
PRECOMPILE = "using Pkg; isfile(Base.active_project()) && (Pkg.instantiate(); Pkg.precompile())"
# ARGS: endpoints file, cookie file, worker count, timeout (s), then the user's script and args.
DRIVER_BOOTSTRAP = """using Distributed
struct GatewayWorkers <: ClusterManager
    endpoints::Vector{Tuple{String,Int}}
end
function Distributed.launch(manager::GatewayWorkers, params::Dict, launched::Array, ready::Condition)
    for (host, port) in manager.endpoints
        config = WorkerConfig()
        config.host = host
        config.port = port
        push!(launched, config)
    end
    notify(ready)
end
Distributed.manage(::GatewayWorkers, ::Integer, ::WorkerConfig, ::Symbol) = nothing
function gateway_endpoints(path, expected, timeout)
    deadline = time() + timeout
    while true
        lines = isfile(path) ? readlines(path) : String[]
        found = [match(r"^julia_worker:([0-9]+)#(.+)$", line) for line in lines]
        endpoints = [(String(m[2]), parse(Int, m[1])) for m in found if m !== nothing]
        length(endpoints) >= expected && return endpoints
        started = length(endpoints)
        time() > deadline && error("slurm-gateway: only $started of $expected Julia workers started")
        sleep(1)
    end
end
cluster_cookie(strip(read(ARGS[2], String)))
addprocs(GatewayWorkers(gateway_endpoints(ARGS[1], parse(Int, ARGS[3]), parse(Float64, ARGS[4]))))
deleteat!(ARGS, 1:4)
include(popfirst!(ARGS))
"""


def julia_depot_path(job: BatchJob, runtime: JuliaRuntime) -> str:
    """JULIA_DEPOT_PATH: as asked, else a depot in the job's working directory (shared storage)."""
    return runtime.depot_path or f"{job.working_dir}/{DEPOT_DIR_NAME}"


def render_julia(job: BatchJob, runtime: JuliaRuntime) -> list[str]:
    """Precompile, start the workers with srun, then run the driver on ``job.command``."""
    julia = shlex.quote(runtime.julia)
    workers = job.nodes * job.tasks_per_node
    return [
        *fabric_exports(job),
        f"export JULIA_DEPOT_PATH={shlex.quote(julia_depot_path(job, runtime))}",
        f"export JULIA_PROJECT={shlex.quote(runtime.project or job.working_dir)}",
        f"export JULIA_WORKER_TIMEOUT={runtime.worker_timeout_s}",
        NODE_IP_FUNCTION,
        *WATCHDOG_LINES,
        'mkdir -p "$JULIA_DEPOT_PATH"',
        f"{julia} -e {shlex.quote(PRECOMPILE)}",
        'sgw_julia_run="$PWD/.sgw-julia-$SLURM_JOB_ID"',
        'mkdir -m 700 "$sgw_julia_run"',
        'export SGW_JULIA_COOKIE="$sgw_julia_run/cookie"',
        f'head -c {COOKIE_BYTES} /dev/urandom | od -An -tx1 | tr -d " \\n" > "$SGW_JULIA_COOKIE"',
        # Each worker reads the cookie on stdin and prints its endpoint on stdout.
        f"srun --nodes={job.nodes} --ntasks={workers} --ntasks-per-node={job.tasks_per_node} "
        f"--cpus-per-task={job.cpus_per_task} --kill-on-bad-exit=1 "
        f"bash -c {shlex.quote(WORKER_LAUNCH)} sgw-node-ip "
        f"{shlex.quote(fabric_interface(job))} SGW_NODE_IP --bind-to= {julia} --worker "
        '> "$sgw_julia_run/endpoints" &',
        "sgw_launchers+=($!)",
        "sgw_run_watched "
        f"{julia} -e {shlex.quote(DRIVER_BOOTSTRAP)} -- "
        f'"$sgw_julia_run/endpoints" "$SGW_JULIA_COOKIE" {workers} {runtime.worker_timeout_s} '
        + shlex.join(job.command or ()),
    ]
