"""Count the hosts in a Slurm hostlist expression without asking Slurm (``gpu[01-02,04],cpu01``)."""

from __future__ import annotations

import re

from slurm.errors import SlurmOutputError

_BRACKET = re.compile(r"\[([^\[\]]*)\]")


def count_hosts(hostlist: str) -> int:
    """Number of hosts named by ``hostlist``; raises SlurmOutputError if it is malformed."""
    return sum(_count_one(part) for part in _split_top_level(hostlist) if part)


def _split_top_level(hostlist: str) -> list[str]:
    # Commas separate hosts only outside brackets; inside they separate ranges.
    parts, depth, current = [], 0, []
    for char in hostlist:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise SlurmOutputError(f"unbalanced hostlist {hostlist[:60]!r}")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise SlurmOutputError(f"unbalanced hostlist {hostlist[:60]!r}")
    parts.append("".join(current))
    return parts


def _count_one(host_pattern: str) -> int:
    # "rack[1-2]n[01-04]" names the cartesian product: 2 x 4 hosts.
    count = 1
    for ranges in _BRACKET.findall(host_pattern):
        count *= sum(_range_size(item, host_pattern) for item in ranges.split(","))
    return count


def _range_size(item: str, host_pattern: str) -> int:
    low, _, high = item.partition("-")
    if not low.isdigit() or (high and not high.isdigit()):
        raise SlurmOutputError(f"malformed hostlist range in {host_pattern[:60]!r}")
    size = int(high) - int(low) + 1 if high else 1
    if size < 1:
        raise SlurmOutputError(f"empty hostlist range in {host_pattern[:60]!r}")
    return size
