"""Turn a failed sbatch's stderr into SlurmRejected (the user can fix it) or SlurmUnavailable.

Only Slurm's stable error strings (its ``slurm_strerror`` texts) are matched; the message users
see is one cleaned line: sbatch's prefixes removed, the refusal first, Slurm's detail lines
(e.g. the QOS limit that was hit) after it in parentheses.
"""

from __future__ import annotations

from slurm.errors import SlurmError, SlurmRejected, SlurmUnavailable

_ERROR_PREFIX = "sbatch: error: "
# How the controller's refusal is introduced by sbatch, and by sbatch --test-only.
_REFUSAL_PREFIXES = ("Batch job submission failed: ", "allocation failure: ")
MAX_MESSAGE_CHARS = 300

# Refusals that mean Slurm could not be reached or did not answer, whatever the job was.
_UNAVAILABLE = (
    "Unable to contact slurm controller",
    "Socket timed out on send/recv operation",
    "Slurm backup controller in standby mode",
    "Transport endpoint is not connected",
    "Zero Bytes were transmitted or received",
    "Communication connection failure",
    "Slurmctld is not responding",
)
# Refusal text (prefix) -> the job field most likely at fault.
_REFUSAL_FIELDS = (
    ("Invalid account or account/partition combination specified", "account"),
    ("Invalid qos specification", "qos"),
    ("Job violates accounting/QOS policy", "qos"),
    ("Invalid partition name specified", "partition"),
    ("Requested partition configuration not available now", "partition"),
    ("Requested node configuration is not available", "resources"),
    ("Invalid generic resource (gres) specification", "resources"),
    ("Memory required by task is not available", "resources"),
    ("Requested time limit is invalid", "time_limit"),
    ("Invalid feature specification", "constraints"),
    ("Invalid job array specification", "array"),
    ("Invalid user id", "unix_user"),
)


def classify_sbatch_failure(stderr: str) -> SlurmError:
    """The error to raise for an sbatch (or ``sbatch --test-only``) that exited non-zero."""
    errors = _error_lines(stderr)
    refusals = [_refusal(line) for line in errors if _refusal(line) is not None]
    refusal = refusals[-1] if refusals else None
    main = refusal if refusal is not None else (errors[-1] if errors else "")
    if not main:
        return SlurmUnavailable("sbatch failed without saying why")
    if any(main.startswith(text) for text in _UNAVAILABLE):
        return SlurmUnavailable(_truncate(f"sbatch: {main}"))
    if refusal is None:
        # sbatch refused before asking the controller (a bad option value, say).
        return SlurmRejected(_truncate(main))
    details = [line for line in errors if _refusal(line) is None and line != main]
    message = f"{main} ({'; '.join(dict.fromkeys(details))})" if details else main
    field = next((name for text, name in _REFUSAL_FIELDS if main.startswith(text)), None)
    return SlurmRejected(_truncate(message), field=field)


def _refusal(line: str) -> str | None:
    for prefix in _REFUSAL_PREFIXES:
        if line.startswith(prefix):
            return line.removeprefix(prefix)
    return None


def _error_lines(stderr: str) -> list[str]:
    """Error lines without sbatch's prefix; warnings and progress messages are dropped."""
    lines = []
    for line in stderr.splitlines():
        cleaned = " ".join(line.split())
        if cleaned.startswith(_ERROR_PREFIX.strip()):
            cleaned = cleaned.removeprefix(_ERROR_PREFIX.strip()).strip()
        elif _refusal(cleaned) is None:
            continue
        if cleaned:
            lines.append(cleaned)
    return lines


def _truncate(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"
