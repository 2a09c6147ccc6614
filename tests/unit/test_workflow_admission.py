"""Multi-step jobs: decoding, the steps graph, per-step admission and the dependents closure."""

from __future__ import annotations

import json

import pytest

from gateway.job_admission import TenantPolicy
from gateway.job_schemas import JobSpec, decode_job_spec
from gateway.workflow_admission import admit_workflow, dependents_closure, step_job_name, step_run_spec
from slurm.errors import JobSpecError

POLICY = TenantPolicy(allowed_partitions=("cpu", "gpu"), allowed_qos=("normal",), default_qos="normal")


def step(name: str, *after: str, **fields: object) -> dict[str, object]:
    return {"name": name, "command": ["true"], "after": list(after), **fields}


def admit(*steps: dict[str, object], **top: object) -> JobSpec:
    spec = decode_job_spec(json.dumps({"name": "pipeline", "steps": list(steps), **top}).encode())
    return admit_workflow(
        spec,
        POLICY,
        gateway_job_id="job-1",
        unix_user="alice",
        account="acct",
        working_dir="/var/lib/slurm-gateway/jobs/t1/job-1",
    )


def refusal(*steps: dict[str, object], **top: object) -> JobSpecError:
    with pytest.raises(JobSpecError) as caught:
        admit(*steps, **top)
    return caught.value


def test_each_step_is_admitted_with_the_tenants_defaults() -> None:
    spec = admit(step("prepare"), step("train", "prepare", partition="gpu", nodes=2))
    assert spec.steps is not None
    prepare, train = spec.steps
    assert (prepare.partition, prepare.qos, prepare.time_limit) == ("cpu", "normal", "60")
    assert (train.partition, train.nodes, train.after) == ("gpu", 2, ["prepare"])


def test_a_step_runs_as_a_plain_job_named_after_the_job_and_the_step() -> None:
    spec = admit(step("prepare"), step("train", "prepare", env={"A": "1"}))
    assert spec.steps is not None
    run = step_run_spec(spec, spec.steps[1])
    assert (run.name, run.env, run.steps, run.command) == ("pipeline.train", {"A": "1"}, None, ["true"])
    assert step_job_name("x" * 100, "y" * 100) == ("x" * 100 + "." + "y" * 100)[:128]


@pytest.mark.parametrize(
    ("steps", "field", "words"),
    [
        ((step("a"), step("a")), "steps[1].name", "used twice"),
        ((step("a", "a"),), "steps[0].after", "after itself"),
        ((step("a", "zz"),), "steps[0].after", "no step named 'zz'"),
        ((step("a", "c"), step("b", "a"), step("c", "b")), "steps[0].after", "cycle (a -> c -> b -> a)"),
        ((step("a"), step("b", nodes=0)), "steps[1].nodes", ">= 1"),
        ((step("a"), step("b", partition="secret")), "steps[1].partition", "not allowed"),
        ((step("a", script="true"),), "steps[0].command", "exactly one"),
    ],
)
def test_a_bad_steps_graph_or_step_is_refused_naming_the_step_field(
    steps: tuple[dict[str, object], ...], field: str, words: str
) -> None:
    error = refusal(*steps)
    assert error.field == field
    assert words in error.message


@pytest.mark.parametrize(
    ("field", "value"), [("command", ["true"]), ("nodes", 2), ("retry", {"max_attempts": 2})]
)
def test_run_fields_belong_to_the_steps_not_the_job(field: str, value: object) -> None:
    error = refusal(step("a"), **{field: value})
    assert error.field == field
    assert "in each step" in error.message


def test_steps_cannot_nest_and_a_job_needs_at_least_one() -> None:
    with pytest.raises(JobSpecError) as caught:
        decode_job_spec(json.dumps({"name": "p", "steps": [{**step("a"), "steps": []}]}).encode())
    assert caught.value.field == "steps[0].steps"
    with pytest.raises(JobSpecError) as empty:
        decode_job_spec(json.dumps({"name": "p", "steps": []}).encode())
    assert empty.value.field == "steps"


def test_the_dependents_closure_follows_after_transitively() -> None:
    after = {"a": [], "b": ["a"], "c": ["b"], "d": ["a"], "e": []}
    assert dependents_closure(after, ["b"]) == {"b", "c"}
    assert dependents_closure(after, ["a"]) == {"a", "b", "c", "d"}
    assert dependents_closure(after, []) == set()
