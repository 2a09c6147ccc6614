import pytest

from slurm.cli_driver import parse_sbatch_parsable, parse_test_only_start
from slurm.errors import SlurmOutputError
from tests.unit.slurm_output_fixtures import recorded


def test_parsable_job_id() -> None:
    assert parse_sbatch_parsable(recorded("sbatch_parsable.stdout")) == "162"


def test_parsable_job_id_with_cluster() -> None:
    assert parse_sbatch_parsable("4242;dev\n") == "4242"


@pytest.mark.parametrize("output", ["", "Submitted batch job 12\n", "12;\n"])
def test_unexpected_sbatch_output_is_an_error(output: str) -> None:
    with pytest.raises(SlurmOutputError):
        parse_sbatch_parsable(output)


def test_test_only_start_estimate() -> None:
    assert parse_test_only_start(recorded("sbatch_test_only.stderr")) == 1795325666


def test_test_only_without_estimate() -> None:
    assert parse_test_only_start("sbatch: warning: nothing\n") is None
