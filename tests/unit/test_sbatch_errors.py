import pytest

from slurm.errors import SlurmRejected, SlurmUnavailable
from slurm.sbatch_errors import classify_sbatch_failure
from tests.unit.slurm_output_fixtures import recorded

QOS_POLICY = "Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)"


@pytest.mark.parametrize(
    ("fixture", "field", "message"),
    [
        (
            "sbatch_bad_account.stderr",
            "account",
            "Invalid account or account/partition combination specified",
        ),
        (
            "sbatch_account_not_associated.stderr",
            "account",
            "Invalid account or account/partition combination specified",
        ),
        ("sbatch_bad_qos.stderr", "qos", "Invalid qos specification"),
        ("sbatch_qos_not_allowed.stderr", "qos", "Invalid qos specification"),
        (
            "sbatch_bad_partition.stderr",
            "partition",
            "Invalid partition name specified (invalid partition specified: sgw_no_such_partition)",
        ),
        ("sbatch_gpu_on_cpu_partition.stderr", "resources", "Requested node configuration is not available"),
        (
            "sbatch_too_much_memory.stderr",
            "resources",
            "Requested node configuration is not available (Memory specification can not be satisfied)",
        ),
        ("sbatch_bad_feature.stderr", "constraints", "Invalid feature specification"),
        ("sbatch_qos_gres_limit.stderr", "qos", f"{QOS_POLICY} (QOSMaxGRESPerUser)"),
        ("sbatch_qos_wall_limit.stderr", "qos", f"{QOS_POLICY} (QOSMaxWallDurationPerJobLimit)"),
        (
            "sbatch_test_only_bad_account.stderr",
            "account",
            "Invalid account or account/partition combination specified",
        ),
    ],
)
def test_recorded_refusals(fixture: str, field: str, message: str) -> None:
    error = classify_sbatch_failure(recorded(fixture))
    assert isinstance(error, SlurmRejected)
    assert (error.field, error.message) == (field, message)
    assert "sbatch" not in error.message and "\n" not in error.message


def test_unreachable_controller_is_unavailable() -> None:
    error = classify_sbatch_failure(recorded("sbatch_controller_down.stderr"))
    assert type(error) is SlurmUnavailable
    assert str(error) == "sbatch: Unable to contact slurm controller (connect failure)"


def test_unknown_refusal_is_rejected_without_field() -> None:
    error = classify_sbatch_failure("sbatch: error: Batch job submission failed: Something new\n")
    assert isinstance(error, SlurmRejected)
    assert (error.field, error.message) == (None, "Something new")


def test_client_side_error_without_refusal_line_is_rejected() -> None:
    error = classify_sbatch_failure("sbatch: error: Invalid --distribution specification\n")
    assert isinstance(error, SlurmRejected)
    assert error.message == "Invalid --distribution specification"


def test_warnings_are_ignored_and_silence_is_unavailable() -> None:
    error = classify_sbatch_failure("sbatch: warning: something odd\n")
    assert type(error) is SlurmUnavailable


def test_long_messages_are_truncated_to_one_line() -> None:
    error = classify_sbatch_failure("sbatch: error: Batch job submission failed: " + "x" * 1000 + "\n")
    assert len(error.message) <= 300
