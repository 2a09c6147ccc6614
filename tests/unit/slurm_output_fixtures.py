"""Read the recorded Slurm output under tests/unit/fixtures/slurm_output."""

from pathlib import Path

SLURM_OUTPUT = Path(__file__).parent / "fixtures" / "slurm_output"


def recorded(name: str) -> str:
    """The recorded output in ``name``."""
    return (SLURM_OUTPUT / name).read_text()
