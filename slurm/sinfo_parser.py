"""Parse ``sinfo -N -O`` output (one line per node and partition) into partition capacity."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from slurm.errors import SlurmOutputError
from slurm.observations import PartitionCapacity

# Every field ends in "|" and has no width, so nothing is padded or truncated.
SINFO_NODE_FIELDS = ("NodeList", "Partition", "StateLong", "Gres", "GresUsed")
SINFO_NODE_FORMAT = ",".join(f"{field}:|" for field in SINFO_NODE_FIELDS)

# Base node states (flags stripped) whose nodes take no new work and lend no idle GPUs.
_BUSY_STATES = frozenset({"allocated", "mixed", "completing", "draining"})
_IDLE_STATES = frozenset({"idle"})
_ACCEPTING_STATES = frozenset({"idle", "mixed"})
# "*" means the node is not responding: whatever its state says, nothing will start on it.
_NOT_RESPONDING_FLAG = "*"
# One gres entry: name, optional type, count, optional "(S:0-1)" or "(IDX:0-2)" detail.
_GRES_ENTRY = re.compile(r"^(?P<name>[^:()]+)(?::(?P<type>[^:()]+))?:(?P<count>\d+)(?:\(.*\))?$")
_STATE_WORD = re.compile(r"^(?P<state>[a-z]+)(?P<flags>[^a-z]*)$")


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One node in one partition."""

    node: str
    partition: str
    # Base state ("idle", "mixed", "down", ...) and the flag characters sinfo appended.
    state: str
    flags: str
    gpus: int
    gpus_used: int
    gpu_types: tuple[str, ...]

    @property
    def accepts_work(self) -> bool:
        """Whether new jobs can start on this node now."""
        return self.state in _ACCEPTING_STATES and _NOT_RESPONDING_FLAG not in self.flags


def parse_sinfo_nodes(text: str) -> list[NodeRow]:
    """Parse ``sinfo -N --noheader -O SINFO_NODE_FORMAT`` output.

    The default partition's trailing "*" is dropped. Raises SlurmOutputError for a malformed
    line.
    """
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = line.split("|")
        # The last field's "|" leaves an empty string behind.
        if len(values) != len(SINFO_NODE_FIELDS) + 1 or values[-1].strip():
            raise SlurmOutputError(f"unexpected sinfo line with {len(values)} fields")
        node, partition, state_long, gres, gres_used = (value.strip() for value in values[:-1])
        state_match = _STATE_WORD.match(state_long.lower())
        if state_match is None:
            raise SlurmOutputError(f"unexpected sinfo node state {state_long[:30]!r}")
        gpu_entries = _gpu_entries(gres)
        rows.append(
            NodeRow(
                node=node,
                partition=partition.removesuffix("*"),
                state=state_match["state"],
                flags=state_match["flags"],
                gpus=sum(count for _, count in gpu_entries),
                gpus_used=sum(count for _, count in _gpu_entries(gres_used)),
                gpu_types=tuple(sorted({gpu_type for gpu_type, _ in gpu_entries if gpu_type})),
            )
        )
    return rows


def partition_capacities(nodes: list[NodeRow], pending_jobs: Mapping[str, int]) -> list[PartitionCapacity]:
    """Capacity per partition, in sinfo's order.

    ``allocated_nodes`` counts nodes running anything (mixed ones included); ``idle_gpus``
    counts free GPUs only on nodes that accept work, so down or drained nodes appear in the
    totals but neither as idle nor as allocated.
    """
    by_partition: dict[str, list[NodeRow]] = {}
    for row in nodes:
        by_partition.setdefault(row.partition, []).append(row)
    return [
        PartitionCapacity(
            name=name,
            total_nodes=len(rows),
            idle_nodes=sum(
                1 for r in rows if r.state in _IDLE_STATES and _NOT_RESPONDING_FLAG not in r.flags
            ),
            allocated_nodes=sum(1 for r in rows if r.state in _BUSY_STATES),
            total_gpus=sum(r.gpus for r in rows),
            allocated_gpus=sum(r.gpus_used for r in rows),
            idle_gpus=sum(max(r.gpus - r.gpus_used, 0) for r in rows if r.accepts_work),
            pending_jobs=pending_jobs.get(name, 0),
            gpu_types=tuple(sorted({t for r in rows for t in r.gpu_types})),
        )
        for name, rows in by_partition.items()
    ]


def _gpu_entries(gres: str) -> list[tuple[str | None, int]]:
    """(type, count) of each gpu entry in a Gres or GresUsed value like ``gpu:h100:3(IDX:0-2)``."""
    entries = []
    for entry in _split_outside_parentheses(gres):
        if entry in ("", "(null)"):
            continue
        match = _GRES_ENTRY.match(entry)
        if match is None:
            raise SlurmOutputError(f"unexpected gres entry {entry[:40]!r}")
        if match["name"] == "gpu":
            entries.append((match["type"], int(match["count"])))
    return entries


def _split_outside_parentheses(value: str) -> list[str]:
    # "gpu:a100:1(IDX:0,2),gpu:h100:0(IDX:N/A)": commas inside parentheses list indexes.
    parts, depth, current = [], 0, []
    for char in value:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts]
