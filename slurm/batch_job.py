"""The domain description of one Slurm batch submission, independent of HTTP and storage.

The gateway turns an API JobSpec plus the tenant's policy into a BatchJob; the drivers in this
package turn a BatchJob into a Slurm job. Every field here has already passed the gateway's
schema validation; the renderers still re-check everything that reaches a shell or an #SBATCH
line (control characters, env names), because generated shell is a security boundary.
"""

from __future__ import annotations

import msgspec

# Every Slurm job the gateway submits carries "<prefix><gateway job id>" in --comment, so after a
# crash between sbatch and recording the Slurm id the job is found in Slurm, not submitted twice.
GATEWAY_COMMENT_PREFIX = "sgw:"


class BatchJob(msgspec.Struct, frozen=True, kw_only=True):
    """One job, ready for a driver to submit."""

    gateway_job_id: str
    name: str
    unix_user: str
    account: str
    partition: str
    # Directory on storage every node sees (never /tmp: each dev node has a private /tmp).
    working_dir: str
    time_limit_minutes: int
    # Exactly one of script (a bash script body) and command (an argv list) is set.
    script: str | None = None
    command: tuple[str, ...] | None = None
    qos: str | None = None
    nodes: int = 1
    tasks_per_node: int = 1
    cpus_per_task: int = 1
    gpus_per_node: int = 0
    gpu_type: str | None = None
    memory_mb_per_node: int | None = None
    constraints: tuple[str, ...] = ()
    env: dict[str, str] = msgspec.field(default_factory=dict)
    # Slurm array expression, e.g. "0-99%8"; validated by slurm.job_validation.
    array: str | None = None

    @property
    def comment(self) -> str:
        """The --comment value that identifies this job in Slurm."""
        return f"{GATEWAY_COMMENT_PREFIX}{self.gateway_job_id}"
