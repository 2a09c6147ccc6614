"""Retry policy: decoding (422 naming the field), decisions, backoff, and per-attempt comments."""

from __future__ import annotations

import msgspec
import pytest

from gateway.job_retry_policy import max_attempts, retry_decision, slurm_outcome
from gateway.job_schemas import MAX_RETRY_BACKOFF_S, RetryPolicy, decode_job_spec
from slurm.batch_job import BatchJob, attempt_comment_key
from slurm.batch_script import render_batch_script
from slurm.errors import JobSpecError
from slurm.job_validation import validate_batch_job


def body(retry: object) -> bytes:
    return msgspec.json.encode({"name": "n", "command": ["true"], "retry": retry})


def test_a_spec_without_retry_has_one_attempt() -> None:
    spec = decode_job_spec(msgspec.json.encode({"name": "n", "command": ["true"]}))
    assert spec.retry is None
    assert max_attempts(spec.retry) == 1


def test_defaults_retry_the_clusters_failures_only() -> None:
    policy = decode_job_spec(body({"max_attempts": 3})).retry
    assert policy == RetryPolicy(
        max_attempts=3, backoff_s=10, on_states=["NODE_FAIL", "BOOT_FAIL", "PREEMPTED"]
    )


@pytest.mark.parametrize(
    ("retry", "field"),
    [
        ({"max_attempts": 0}, "retry.max_attempts"),
        ({"max_attempts": 11}, "retry.max_attempts"),
        ({"backoff_s": -1}, "retry.backoff_s"),
        ({"backoff_s": MAX_RETRY_BACKOFF_S + 1}, "retry.backoff_s"),
        ({"on_states": ["CANCELLED"]}, "retry.on_states[0]"),
        ({"on_exit_codes": [0]}, "retry.on_exit_codes[0]"),
        ({"on_exit_codes": [256]}, "retry.on_exit_codes[0]"),
        ({"attempts": 2}, "retry.attempts"),
    ],
)
def test_bad_policies_name_the_field(retry: object, field: str) -> None:
    with pytest.raises(JobSpecError) as caught:
        decode_job_spec(body(retry))
    assert caught.value.field == field


POLICY = RetryPolicy(max_attempts=3, backoff_s=2, on_states=["NODE_FAIL", "TIMEOUT"], on_exit_codes=[3])


@pytest.mark.parametrize(
    ("slurm_state", "exit_code", "retried"),
    [
        ("NODE_FAIL", None, True),
        ("NODE_FAIL+", 0, True),
        ("TIMEOUT", 0, True),
        ("FAILED", 3, True),
        ("FAILED", 4, False),
        ("PREEMPTED", None, False),
        ("CANCELLED by 1000", None, False),
        ("COMPLETED", 0, False),
        ("OUT_OF_MEMORY", 0, False),
    ],
)
def test_which_outcomes_retry(slurm_state: str, exit_code: int | None, retried: bool) -> None:
    decision = retry_decision(POLICY, slurm_state=slurm_state, exit_code=exit_code, attempt=1)
    assert (decision is not None) == retried


def test_failed_in_on_states_retries_any_exit_code() -> None:
    policy = RetryPolicy(max_attempts=2, on_states=["FAILED"])
    assert retry_decision(policy, slurm_state="FAILED", exit_code=42, attempt=1) is not None


def test_backoff_doubles_and_attempts_run_out() -> None:
    first = retry_decision(POLICY, slurm_state="NODE_FAIL", exit_code=None, attempt=1)
    second = retry_decision(POLICY, slurm_state="FAILED", exit_code=3, attempt=2)
    assert first is not None and second is not None
    assert (first.next_attempt, first.delay_s) == (2, 2.0)
    assert (second.next_attempt, second.delay_s) == (3, 4.0)
    assert first.reason == "retrying: NODE_FAIL on attempt 1, attempt 2 after 2 s"
    assert second.reason == "retrying: FAILED (exit code 3) on attempt 2, attempt 3 after 4 s"
    assert retry_decision(POLICY, slurm_state="NODE_FAIL", exit_code=None, attempt=3) is None
    assert retry_decision(None, slurm_state="NODE_FAIL", exit_code=None, attempt=1) is None


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(max_attempts=10, backoff_s=MAX_RETRY_BACKOFF_S, on_states=["NODE_FAIL"])
    decision = retry_decision(policy, slurm_state="NODE_FAIL", exit_code=None, attempt=5)
    assert decision is not None and decision.delay_s == MAX_RETRY_BACKOFF_S


def test_slurm_outcome_is_the_base_word() -> None:
    assert slurm_outcome("CANCELLED by 1000") == "CANCELLED"
    assert slurm_outcome("node_fail+") == "NODE_FAIL"
    assert slurm_outcome("") == ""


def test_each_attempt_has_its_own_comment() -> None:
    job = BatchJob(
        gateway_job_id="job-1f2e",
        name="n",
        unix_user="alice",
        account="acct",
        partition="cpu",
        working_dir="/var/tmp/x",
        time_limit_minutes=1,
        command=("true",),
    )
    assert job.comment == "sgw:job-1f2e"
    second = msgspec.structs.replace(job, attempt=2)
    assert second.comment == "sgw:job-1f2e:a2"
    assert attempt_comment_key("job-1f2e", 2) == "job-1f2e:a2"
    validate_batch_job(second)
    assert "--comment=sgw:job-1f2e:a2\n" in render_batch_script(second)
    with pytest.raises(JobSpecError) as caught:
        validate_batch_job(msgspec.structs.replace(job, attempt=0))
    assert caught.value.field == "attempt"
