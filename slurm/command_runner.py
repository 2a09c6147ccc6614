"""Run Slurm client commands as subprocesses, turning failures into SlurmUnavailable."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from slurm.errors import SlurmUnavailable

# Long enough for a useful message, short enough for a log line or an API response.
MAX_SUMMARY_CHARS = 200


@dataclass(frozen=True, slots=True)
class CommandOutput:
    """Both streams of a command that succeeded (sbatch --test-only answers on stderr)."""

    stdout: str
    stderr: str


class CommandFailed(SlurmUnavailable):
    """A command ran and exited non-zero; keeps its full stderr so callers can classify it.

    ``str(exc)`` stays the one-line summary; ``stderr`` is for parsers, never for users.
    """

    def __init__(self, summary: str, *, program: str, returncode: int, stderr: str) -> None:
        super().__init__(summary)
        self.program = program
        self.returncode = returncode
        self.stderr = stderr


class CommandRunner(Protocol):
    """Anything that can run a Slurm command and return its output."""

    def run(
        self, argv: Sequence[str], *, stdin: str | None = None, env: Mapping[str, str] | None = None
    ) -> str:
        """Run ``argv`` and return its stdout; raise SlurmUnavailable on failure."""
        ...

    def capture(
        self, argv: Sequence[str], *, stdin: str | None = None, env: Mapping[str, str] | None = None
    ) -> CommandOutput:
        """Run ``argv`` and return stdout and stderr; raise SlurmUnavailable on failure."""
        ...


class SubprocessCommandRunner:
    """CommandRunner that executes commands directly (never through a shell)."""

    def __init__(self, *, timeout_s: float, bin_dir: Path | None = None) -> None:
        """``bin_dir``, when given, is where the Slurm client binaries live."""
        self._timeout_s = timeout_s
        self._bin_dir = bin_dir

    def run(
        self, argv: Sequence[str], *, stdin: str | None = None, env: Mapping[str, str] | None = None
    ) -> str:
        """Run ``argv`` with the configured timeout and return its stdout.

        ``stdin`` is written to the program's standard input; ``env``, when given, is the
        program's whole environment (None: it inherits this process's). Raises SlurmUnavailable
        with a one-line summary if the program is missing or times out, and its subclass
        CommandFailed if it exits non-zero.
        """
        return self.capture(argv, stdin=stdin, env=env).stdout

    def capture(
        self, argv: Sequence[str], *, stdin: str | None = None, env: Mapping[str, str] | None = None
    ) -> CommandOutput:
        """Like ``run``, but return stderr as well."""
        if not argv:
            raise ValueError("argv must name a program")
        program = argv[0]
        resolved = [str(self._bin_dir / program) if self._bin_dir else program, *argv[1:]]
        try:
            completed = subprocess.run(
                resolved,
                input=stdin,
                env=dict(env) if env is not None else None,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=self._timeout_s,
                check=True,
            )
        except FileNotFoundError as exc:
            raise SlurmUnavailable(f"{program}: command not found") from exc
        except PermissionError as exc:
            raise SlurmUnavailable(f"{program}: permission denied") from exc
        except subprocess.TimeoutExpired as exc:
            raise SlurmUnavailable(f"{program}: timed out after {self._timeout_s:g}s") from exc
        except subprocess.CalledProcessError as exc:
            reason = _first_line(exc.stderr) or _describe_silent_failure(exc)
            raise CommandFailed(
                f"{program}: {reason}", program=program, returncode=exc.returncode, stderr=exc.stderr or ""
            ) from exc
        return CommandOutput(stdout=completed.stdout, stderr=completed.stderr)


def _describe_silent_failure(exc: subprocess.CalledProcessError) -> str:
    # Some commands (scontrol ping with every controller down) explain themselves on stdout.
    status = f"exited with status {exc.returncode}"
    first_stdout_line = _first_line(exc.stdout)
    return f"{status}: {first_stdout_line}" if first_stdout_line else status


def _first_line(text: str | None) -> str:
    """First non-blank line, whitespace-collapsed and truncated; "" if there is none."""
    for line in (text or "").splitlines():
        cleaned = " ".join(line.split())
        if cleaned:
            if len(cleaned) > MAX_SUMMARY_CHARS:
                return cleaned[: MAX_SUMMARY_CHARS - 1] + "…"
            return cleaned
    return ""
