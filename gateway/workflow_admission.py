"""Admission of multi-step jobs: the ``steps`` graph checked, each step admitted like a job.

Pure functions (no database, no Slurm, no HTTP). A multi-step job carries only ``name``,
``labels`` and ``steps`` at the top level; every step is admitted with the tenant's policy as a
plain job would be, and its ``after`` list must name earlier-or-later steps of the same job
without forming a cycle. Errors name the step's field as ``steps[<index>].<field>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec

from gateway.job_admission import TenantPolicy, admit_job_spec, batch_job_from_spec
from gateway.job_schemas import JobSpec, RunSpec, StepSpec
from slurm.errors import JobSpecError
from slurm.job_validation import MAX_NAME_CHARS, validate_batch_job

# Fields a multi-step job may set at the top level; the rest belong to its steps.
_TOP_LEVEL_FIELDS = frozenset({"name", "labels", "steps"})


def admit_workflow(
    spec: JobSpec,
    policy: TenantPolicy,
    *,
    gateway_job_id: str,
    unix_user: str,
    account: str,
    working_dir: str,
) -> JobSpec:
    """The admitted multi-step ``spec`` (each step with its defaults resolved); JobSpecError if not."""
    steps = spec.steps or []
    _check_top_level(spec)
    _check_graph(steps)
    admitted = []
    for index, step in enumerate(steps):
        try:
            step_spec = admit_job_spec(step, policy)
            validate_batch_job(
                batch_job_from_spec(
                    step_spec,
                    gateway_job_id=gateway_job_id,
                    unix_user=unix_user,
                    account=account,
                    working_dir=working_dir,
                    step_name=step.name,
                )
            )
        except JobSpecError as exc:
            raise JobSpecError(f"steps[{index}].{exc.field}", exc.message) from exc
        admitted.append(step_spec)
    return msgspec.structs.replace(spec, steps=admitted)


def step_run_spec(workflow: JobSpec, step: StepSpec) -> JobSpec:
    """The plain JobSpec one step runs as (its own Slurm job), named ``<job>.<step>``."""
    fields = {name: getattr(step, name) for name in RunSpec.__struct_fields__}
    fields["name"] = step_job_name(workflow.name, step.name)
    return JobSpec(**fields)


def step_job_name(workflow_name: str, step_name: str) -> str:
    """The Slurm job name of a step: the job's name and the step's, cut to Slurm's limit."""
    return f"{workflow_name}.{step_name}"[:MAX_NAME_CHARS]


def dependents_closure(after: Mapping[str, Sequence[str]], roots: Iterable[str]) -> set[str]:
    """``roots`` and every step that depends on one of them, directly or through others.

    ``after`` maps each step name to the steps it runs after.
    """
    dependents: dict[str, list[str]] = {name: [] for name in after}
    for name, needs in after.items():
        for need in needs:
            dependents[need].append(name)
    found: set[str] = set()
    waiting = list(roots)
    while waiting:
        name = waiting.pop()
        if name not in found:
            found.add(name)
            waiting.extend(dependents.get(name, ()))
    return found


def _check_top_level(spec: JobSpec) -> None:
    defaults = JobSpec(name=spec.name)
    for field in JobSpec.__struct_fields__:
        if field not in _TOP_LEVEL_FIELDS and getattr(spec, field) != getattr(defaults, field):
            raise JobSpecError(field, "a job with 'steps' sets this in each step, not at the top level")


def _check_graph(steps: Sequence[StepSpec]) -> None:
    index_of: dict[str, int] = {}
    for index, step in enumerate(steps):
        if step.name in index_of:
            raise JobSpecError(
                f"steps[{index}].name", f"step name {step.name!r} is used twice; names are unique"
            )
        index_of[step.name] = index
    for index, step in enumerate(steps):
        for need in step.after:
            if need == step.name:
                raise JobSpecError(f"steps[{index}].after", "a step cannot run after itself")
            if need not in index_of:
                known = ", ".join(index_of)
                raise JobSpecError(f"steps[{index}].after", f"no step named {need!r}; steps: {known}")
    cycle = _find_cycle({step.name: step.after for step in steps})
    if cycle:
        raise JobSpecError(
            f"steps[{index_of[cycle[0]]}].after",
            f"steps depend on each other in a cycle ({' -> '.join([*cycle, cycle[0]])}); break it",
        )


def _find_cycle(after: Mapping[str, Sequence[str]]) -> list[str]:
    # Depth-first search; a step met again while still on the path closes a cycle.
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> list[str]:
        if name in path:
            return path[path.index(name) :]
        if name in done:
            return []
        path.append(name)
        for need in after[name]:
            cycle = visit(need)
            if cycle:
                return cycle
        path.pop()
        done.add(name)
        return []

    for name in after:
        cycle = visit(name)
        if cycle:
            return cycle
    return []
