"""Parse ``scontrol ping`` output and ask the Slurm controllers whether they are up."""

from __future__ import annotations

import re
from dataclasses import dataclass

from slurm.command_runner import CommandRunner
from slurm.errors import SlurmOutputError

# One line per controller, e.g. "Slurmctld(primary) at myhost is UP".
_PING_LINE = re.compile(r"^Slurmctld\((?P<role>[^()\s]+)\) at (?P<host>\S+) is (?P<state>UP|DOWN)$")

# When run as root with a controller down, scontrol appends a banner such as
# "** RESTORE SLURMCTLD DAEMON TO SERVICE **" framed by lines of asterisks.
_ROOT_BANNER_LINE = re.compile(r"^\*+$|^\*\* .* \*\*$")

# Bounds how much unparseable output is echoed back in an error message.
_MAX_QUOTED_CHARS = 80


@dataclass(frozen=True, slots=True)
class ControllerStatus:
    """State of one slurmctld as reported by ``scontrol ping``."""

    role: str
    host: str
    is_up: bool


def parse_scontrol_ping(text: str) -> list[ControllerStatus]:
    """Parse ``scontrol ping`` output into one ControllerStatus per controller.

    Raises SlurmOutputError if a line is not a controller line or none is found.
    """
    statuses = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or _ROOT_BANNER_LINE.match(stripped):
            continue
        match = _PING_LINE.match(stripped)
        if match is None:
            raise SlurmOutputError(f"unrecognised scontrol ping line: {_quote(stripped)}")
        statuses.append(
            ControllerStatus(role=match["role"], host=match["host"], is_up=match["state"] == "UP")
        )
    if not statuses:
        raise SlurmOutputError("scontrol ping reported no controllers")
    return statuses


def ping_controller(runner: CommandRunner) -> list[ControllerStatus]:
    """Run ``scontrol ping`` through ``runner`` and parse the result.

    scontrol exits non-zero when no controller is up, so that case surfaces as
    SlurmUnavailable from the runner rather than as a list of DOWN statuses.
    """
    return parse_scontrol_ping(runner.run(["scontrol", "ping"]))


def _quote(text: str) -> str:
    if len(text) > _MAX_QUOTED_CHARS:
        text = text[: _MAX_QUOTED_CHARS - 1] + "…"
    return repr(text)
