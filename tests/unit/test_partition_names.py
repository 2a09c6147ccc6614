from pathlib import Path

import pytest

from slurm.errors import SlurmOutputError
from slurm.partition_names import parse_partition_names

FIXTURES = Path(__file__).parent / "fixtures"


def test_parses_recorded_sinfo_output() -> None:
    # Recorded on the dev cluster with `sinfo -h -o %R`.
    stdout = (FIXTURES / "sinfo_partition_names.txt").read_text()
    assert parse_partition_names(stdout) == frozenset({"gpu", "cpu"})


def test_repeated_names_and_blank_lines_collapse() -> None:
    assert parse_partition_names("gpu\ngpu\n\ncpu\n") == frozenset({"gpu", "cpu"})


def test_garbled_output_is_an_output_error() -> None:
    with pytest.raises(SlurmOutputError):
        parse_partition_names("PARTITION AVAIL\n")
