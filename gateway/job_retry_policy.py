"""Whether an ended attempt is retried, and after how long (pure; no database, no Slurm).

The policy (gateway.job_schemas.RetryPolicy) speaks Slurm's outcomes, so the decision takes
Slurm's state word as observed, not the gateway state it maps to (BOOT_FAIL and NODE_FAIL are
both ``node_fail`` to users, yet a policy may name either).
"""

from __future__ import annotations

import msgspec

from gateway.job_schemas import MAX_RETRY_BACKOFF_S, RetryPolicy


class RetryDecision(msgspec.Struct, frozen=True, kw_only=True):
    """Retry the ended attempt: the next attempt's number, when it may start, and why."""

    next_attempt: int
    delay_s: float
    reason: str


def max_attempts(policy: RetryPolicy | None) -> int:
    """Attempts the policy allows in all (1 without a policy)."""
    return 1 if policy is None else policy.max_attempts


def retry_decision(
    policy: RetryPolicy | None, *, slurm_state: str, exit_code: int | None, attempt: int
) -> RetryDecision | None:
    """The retry of ``attempt``, which ended in Slurm state ``slurm_state``; None: no retry.

    Retried when attempts remain and the outcome is in ``on_states``, or when it is FAILED with
    an exit code in ``on_exit_codes``. Anything else (COMPLETED, CANCELLED, ...) never is.
    """
    if policy is None or attempt >= policy.max_attempts:
        return None
    outcome = slurm_outcome(slurm_state)
    retryable = outcome in policy.on_states or (
        outcome == "FAILED" and exit_code is not None and exit_code in policy.on_exit_codes
    )
    if not retryable:
        return None
    delay_s = float(min(MAX_RETRY_BACKOFF_S, policy.backoff_s * 2 ** (attempt - 1)))
    detail = f"{outcome} (exit code {exit_code})" if outcome == "FAILED" else outcome
    return RetryDecision(
        next_attempt=attempt + 1,
        delay_s=delay_s,
        reason=f"retrying: {detail} on attempt {attempt}, attempt {attempt + 1} after {delay_s:g} s",
    )


def slurm_outcome(slurm_state: str) -> str:
    """Slurm's base state word: "CANCELLED by 1000" -> "CANCELLED", "NODE_FAIL+" -> "NODE_FAIL"."""
    words = slurm_state.split(maxsplit=1)
    return words[0].rstrip("+").upper() if words else ""
