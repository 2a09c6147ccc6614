"""Shell for the job's network: fabric variables, node addresses and per-job ports.

Ports are derived from the Slurm job id so two jobs sharing a node never pick the same ones:
each job gets a block of JOB_PORT_BLOCK ports in [JOB_PORT_FIRST, 32768), below Linux's
ephemeral range. Within a block, node i uses slot i % NODE_SLOTS: on a real cluster nodes are
separate hosts anyway, but the dev cluster's emulated nodes share one network namespace.
"""

from __future__ import annotations

import shlex

from slurm.batch_job import BatchJob

JOB_PORT_FIRST = 10000
JOB_PORT_BLOCK = 64
JOB_PORT_BLOCKS = (32768 - JOB_PORT_FIRST) // JOB_PORT_BLOCK
# The first HEAD_PORTS ports of a block belong to the job as a whole (head, rendezvous).
HEAD_PORTS = 8
NODE_SLOTS = 8
NODE_SLOT_PORTS = (JOB_PORT_BLOCK - HEAD_PORTS) // NODE_SLOTS

# Prints the IPv4 address of interface $1 on this node (the first address of the host when $1
# is empty) and fails loudly when there is none, rather than letting a runtime bind to nothing.
NODE_IP_FUNCTION = (
    'sgw_node_ip() { local ip; if [ -n "$1" ]; then '
    'ip=$(ip -o -4 addr show dev "$1" | awk \'{split($4, a, "/"); print a[1]; exit}\'); '
    "else ip=$(hostname -I | awk '{print $1}'); fi; "
    '[ -n "$ip" ] || { echo "slurm-gateway: no IPv4 address on interface ${1:-of this host}" >&2; '
    'return 1; }; printf "%s\\n" "$ip"; }'
)
# Run on each node (as `bash -c PROGRAM sgw-node-ip IFACE VAR FLAG CMD...`), where the node's
# address is known: exec CMD with VAR=<address of IFACE> exported and, unless FLAG is empty,
# FLAG<address> appended.
EXEC_WITH_NODE_IP = (
    NODE_IP_FUNCTION + '; sgw_ip=$(sgw_node_ip "$1"); export "$2=$sgw_ip"; flag=$3; shift 3; '
    'if [ -n "$flag" ]; then set -- "$@" "$flag$sgw_ip"; fi; exec "$@"'
)


def fabric_exports(job: BatchJob) -> list[str]:
    """``export`` lines for the partition's fabric settings (UCX, NCCL, extra variables)."""
    fabric = job.fabric
    if fabric is None:
        return []
    settings = {
        "UCX_NET_DEVICES": fabric.ucx_net_devices,
        "NCCL_IB_HCA": fabric.nccl_ib_hca,
        "NCCL_SOCKET_IFNAME": fabric.nccl_socket_ifname,
        **fabric.env,
    }
    return [f"export {name}={_quoted(value)}" for name, value in settings.items() if value is not None]


def _quoted(value: str) -> str:
    # Always in quotes: NCCL_IB_HCA's "=mlx5_0" form is valid bash unquoted but reads like a typo.
    quoted = shlex.quote(value)
    return quoted if quoted.startswith("'") else f"'{value}'"


def fabric_interface(job: BatchJob) -> str:
    """The interface runtimes bind to ("" when none is configured: the host's first address)."""
    if job.fabric is None or job.fabric.interface is None:
        return ""
    return job.fabric.interface


def job_port_base_lines() -> list[str]:
    """Set ``sgw_port_base``, the first port of this job's block."""
    return [
        "# Ports come from the job id, so jobs sharing a node never collide.",
        f"sgw_port_base=$(( {JOB_PORT_FIRST} + SLURM_JOB_ID % {JOB_PORT_BLOCKS} * {JOB_PORT_BLOCK} ))",
    ]
