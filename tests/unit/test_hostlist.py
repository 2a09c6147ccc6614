import pytest

from slurm.errors import SlurmOutputError
from slurm.hostlist import count_hosts


@pytest.mark.parametrize(
    ("hostlist", "count"),
    [
        ("gpu01", 1),
        ("gpu[01-02]", 2),
        ("gpu[01-02,04],cpu01", 4),
        ("rack[1-2]n[01-04]", 8),
        ("cpu[01-02],gpu[01-04]", 6),
    ],
)
def test_counts_hosts(hostlist: str, count: int) -> None:
    assert count_hosts(hostlist) == count


@pytest.mark.parametrize("hostlist", ["gpu[01-02", "gpu01]", "gpu[a-b]", "gpu[04-01]"])
def test_malformed_hostlists_are_errors(hostlist: str) -> None:
    with pytest.raises(SlurmOutputError):
        count_hosts(hostlist)
