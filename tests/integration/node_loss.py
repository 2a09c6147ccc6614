"""Losing an emulated node for real, and getting it back (shared by the node-loss test and bench).

Each dev node's slurmd runs in its own UTS + mount namespace, so "the node" is exactly the set of
processes in that UTS namespace: its slurmd, the slurmstepds and every job process under them.
SIGKILLing all of them is a power cut as far as Slurm can tell; restoring starts a fresh slurmd.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.integration.slurm_cluster import run_command

# States in which a node takes work again (other tests may have jobs on it).
USABLE_NODE_STATES = frozenset({"idle", "mix", "alloc", "comp"})


def slurmd_pid(node: str) -> int:
    """The pid of ``node``'s slurmd, from the dev launcher's pid file."""
    return int(Path(f"/run/slurmd-{node}.pid").read_text().strip())


def _uts_namespace(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/uts")
    except OSError:
        return None


def kill_node(node: str) -> list[int]:
    """SIGKILL ``node``'s slurmd and every process in its UTS namespace; returns the pids killed."""
    namespace = _uts_namespace(slurmd_pid(node))
    # Never the host's own namespace: that would take the whole machine's processes with it.
    if namespace is None or namespace == _uts_namespace("self"):
        raise RuntimeError(f"slurmd of {node} has no UTS namespace of its own ({namespace})")
    killed = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _uts_namespace(entry.name) == namespace:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except ProcessLookupError:
                pass
    return killed


def node_state(node: str) -> str:
    """The node's compact sinfo state (``idle``, ``down*``, ``mix``, ...)."""
    return run_command(["sinfo", "-h", "-n", node, "-o", "%t"]).stdout.strip()


def restore_node(node: str, timeout_s: float = 60) -> None:
    """Start ``node``'s slurmd again and wait until Slurm gives it work again.

    ReturnToService=2 brings a node that registers back on its own; a node still down after a
    while is resumed by hand so the shared cluster is always left healthy.
    """
    subprocess.run(["slurm-dev-daemon", "ensure", "slurmd", node], check=True, capture_output=True)
    deadline = time.monotonic() + timeout_s
    resumed = False
    state = ""
    while time.monotonic() < deadline:
        state = node_state(node)
        if state in USABLE_NODE_STATES:
            return
        if not resumed and time.monotonic() > deadline - timeout_s / 2 and not state.endswith("*"):
            run_command(["scontrol", "update", f"nodename={node}", "state=resume"], check=False)
            resumed = True
        time.sleep(0.2)
    raise AssertionError(f"node {node} still {state!r} {timeout_s} s after restarting its slurmd")


def job_nodes(slurm_job_id: str) -> list[str]:
    """The nodes of a running Slurm job, from squeue's NodeList."""
    hostlist = run_command(["squeue", "-h", "-j", slurm_job_id, "-o", "%N"]).stdout.strip()
    if not hostlist:
        return []
    return run_command(["scontrol", "show", "hostnames", hostlist]).stdout.split()
