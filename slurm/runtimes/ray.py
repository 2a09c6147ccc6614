"""The ``ray`` runtime: a Ray cluster over the job's nodes, then the driver on the first node.

The head runs on the first node, one worker on each other node, each in its own
``srun -N1 -n1 -w <node>`` step with ``ray start --block`` in the background, watched by the
watchdog (slurm.runtimes.background_steps). Every Ray port comes from the job's port block,
CPU and GPU counts are literal (SLURM_GPUS_PER_TASK is gone in Slurm 23.11), the temp dir is
short and node-local (Ray's socket paths must stay under 107 bytes) and the driver starts only
once every node has joined.
"""

from __future__ import annotations

import shlex

from slurm.batch_job import BatchJob, RayRuntime
from slurm.runtimes.background_steps import WATCHDOG_LINES
from slurm.runtimes.node_network import (
    EXEC_WITH_NODE_IP,
    HEAD_PORTS,
    NODE_IP_FUNCTION,
    NODE_SLOT_PORTS,
    NODE_SLOTS,
    fabric_exports,
    fabric_interface,
    job_port_base_lines,
)

# Share of the job's memory per node given to Ray's object store when the spec names none.
DEFAULT_OBJECT_STORE_SHARE = 0.3
# Waits until the head's GCS port ($1, host:port) accepts connections, at most $2 seconds.
WAIT_FOR_HEAD = (
    'until (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; do (( SECONDS < $2 )) '
    '|| { echo "slurm-gateway: the Ray head did not start" >&2; exit 1; }; sleep 1; done'
)
# Waits (one Ray client, polling ray.nodes()) until argv[2] nodes are alive, at most argv[3] s.
WAIT_FOR_NODES = (
    "import sys, time, ray\n"
    "address, expected, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])\n"
    "ray.init(address=address, logging_level='ERROR', log_to_driver=False)\n"
    "deadline = time.monotonic() + timeout\n"
    "while (alive := sum(1 for node in ray.nodes() if node['Alive'])) < expected:\n"
    "    if time.monotonic() > deadline:\n"
    "        sys.exit(f'slurm-gateway: only {alive} of {expected} Ray nodes joined in {timeout:.0f} s')\n"
    "    time.sleep(1)\n"
    "ray.shutdown()\n"
)


def object_store_mb(job: BatchJob, runtime: RayRuntime) -> int | None:
    """The object store per node in MB: as asked, else a share of the job's memory, else Ray's."""
    if runtime.object_store_mb is not None:
        return runtime.object_store_mb
    if job.memory_mb_per_node is None:
        return None
    return int(job.memory_mb_per_node * DEFAULT_OBJECT_STORE_SHARE)


def render_ray(job: BatchJob, runtime: RayRuntime) -> list[str]:
    """Start the Ray nodes, wait for all of them, then run ``job.command`` as the driver."""
    interface = shlex.quote(fabric_interface(job))
    python = shlex.quote(runtime.python)
    cpus = job.tasks_per_node * job.cpus_per_task
    start_options = [
        f"--num-cpus={cpus}",
        f"--num-gpus={job.gpus_per_node}",
        # 0/0: workers bind to ports the kernel picks, which never collide.
        "--min-worker-port=0",
        "--max-worker-port=0",
        '--temp-dir="$sgw_ray_temp"',
        "--disable-usage-stats",
        "--block",
    ]
    store = object_store_mb(job, runtime)
    if store is not None:
        start_options.insert(2, f"--object-store-memory={store * 1024 * 1024}")
    node_ports = [  # per node: its slot of the job's port block
        "--node-manager-port=$(( sgw_slot ))",
        "--object-manager-port=$(( sgw_slot + 1 ))",
        "--metrics-export-port=$(( sgw_slot + 2 ))",
        "--dashboard-agent-grpc-port=$(( sgw_slot + 3 ))",
        "--dashboard-agent-listen-port=$(( sgw_slot + 4 ))",
        "--runtime-env-agent-port=$(( sgw_slot + 5 ))",
    ]
    slot_expression = f"sgw_port_base + {HEAD_PORTS} + index % {NODE_SLOTS} * {NODE_SLOT_PORTS}"
    head_options = [
        "--head",
        '"--port=$sgw_port_base"',
        "--dashboard-port=$(( sgw_port_base + 2 ))",
        "--include-dashboard=false",
    ]
    return [
        *fabric_exports(job),
        NODE_IP_FUNCTION,
        *WATCHDOG_LINES,
        *job_port_base_lines(),
        f"sgw_node_launch={shlex.quote(EXEC_WITH_NODE_IP)}",
        'mapfile -t sgw_nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")',
        # The batch step runs on the first node: the head's address is known here.
        f"sgw_head_ip=$(sgw_node_ip {interface})",
        'export RAY_ADDRESS="$sgw_head_ip:$sgw_port_base"',
        'sgw_ray_temp="/tmp/ray-$SLURM_JOB_ID"',
        "sgw_start_node() {",
        "  local index=$1",
        f"  local sgw_slot=$(( {slot_expression} ))",
        '  local role=(--address="$RAY_ADDRESS")',
        f"  if (( index == 0 )); then role=({' '.join(head_options)}); fi",
        f'  srun --nodes=1 --ntasks=1 --cpus-per-task={cpus} -w "${{sgw_nodes[$index]}}" \\',
        f'    bash -c "$sgw_node_launch" sgw-node-ip {interface} SGW_NODE_IP --node-ip-address= \\',
        f'    {python} -m ray.scripts.scripts start "${{role[@]}}" {" ".join(node_ports)} \\',
        f"    {' '.join(start_options)} &",
        "  sgw_launchers+=($!)",
        "}",
        "sgw_start_node 0",
        "# Workers join only once the head's GCS port answers.",
        f"sgw_run_watched bash -c {shlex.quote(WAIT_FOR_HEAD)} sgw-wait-head "
        f'"$RAY_ADDRESS" {runtime.join_timeout_s}',
        'for (( i = 1; i < ${#sgw_nodes[@]}; i++ )); do sgw_start_node "$i"; done',
        f"sgw_run_watched {python} -c {shlex.quote(WAIT_FOR_NODES)} "
        f'"$RAY_ADDRESS" "${{#sgw_nodes[@]}}" {runtime.join_timeout_s}',
        "sgw_run_watched " + shlex.join(job.command or ()),
    ]
