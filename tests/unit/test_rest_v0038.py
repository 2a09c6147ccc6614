"""The slurmrestd v0.0.38 mapping, on answers recorded from the dev cluster's slurmrestd."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from slurm import rest_v0038
from slurm.batch_job import BatchJob
from slurm.errors import JobSpecError, SlurmRejected, SlurmUnavailable
from slurm.observations import JobObservation

FIXTURES = Path(__file__).parent / "fixtures" / "slurmrestd"


def recorded(name: str) -> tuple[int, dict[str, Any]]:
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    return data["http_status"], data["body"]


def listing(name: str, key: str = "jobs") -> list[Any]:
    return rest_v0038.checked_listing(*recorded(name), key, "test")


# The recording's jobs; 57 is the array.
RECORDED_IDS = ["53", "54", "55", "56", "57"]


def live(name: str, ids: list[str] = RECORDED_IDS) -> dict[str, Any]:
    pairs = [(rest_v0038.live_keys(r), rest_v0038.live_observation(r)) for r in listing(name)]
    return rest_v0038.observations_for(ids, pairs)


def accounting(ids: list[str] = RECORDED_IDS) -> dict[str, Any]:
    pairs = [
        (rest_v0038.accounting_keys(r), rest_v0038.accounting_observation(r)) for r in listing("db_jobs")
    ]
    return rest_v0038.observations_for(ids, pairs)


def gpu_job(**changes: Any) -> BatchJob:
    fields: dict[str, Any] = {
        "gateway_job_id": "j-1",
        "name": "train",
        "unix_user": "alice",
        "account": "acct",
        "partition": "gpu",
        "working_dir": "/var/lib/slurm-gateway/jobs/t/j-1",
        "time_limit_minutes": 90,
        "script": "srun hostname",
        "nodes": 2,
        "tasks_per_node": 4,
        "cpus_per_task": 2,
        "gpus_per_node": 4,
        "gpu_type": "h100",
        "memory_mb_per_node": 2000,
        "constraints": ("ib", "h100"),
        "env": {"A": "1,2"},
    }
    fields.update(changes)
    return BatchJob(**fields)


def test_submission_body_carries_every_option_as_job_properties() -> None:
    body = rest_v0038.submission_body(gpu_job(qos="high"), "#!/bin/bash\n")
    assert body["script"] == "#!/bin/bash\n"
    assert body["job"] == {
        "name": "train",
        "account": "acct",
        "partition": "gpu",
        "qos": "high",
        "nodes": 2,
        "tasks": 8,
        "tasks_per_node": 4,
        "cpus_per_task": 2,
        "gres": "gpu:h100:4",
        "memory_per_node": 2000,
        "time_limit": 90,
        "constraints": "ib&h100",
        "comment": "sgw:j-1",
        "requeue": False,
        "current_working_directory": "/var/lib/slurm-gateway/jobs/t/j-1",
        "standard_output": "/var/lib/slurm-gateway/jobs/t/j-1/slurm-%j.out",
        "standard_error": "/var/lib/slurm-gateway/jobs/t/j-1/slurm-%j.err",
        "environment": {"PATH": "/usr/local/bin:/usr/bin:/bin", "A": "1,2"},
    }


def test_submission_body_leaves_out_unset_options_and_names_array_logs_per_task() -> None:
    job = gpu_job(gpus_per_node=0, gpu_type=None, memory_mb_per_node=None, constraints=(), array="0-9%2")
    properties = rest_v0038.submission_body(job, "x")["job"]
    assert {"qos", "gres", "memory_per_node", "constraints"}.isdisjoint(properties)
    assert properties["array"] == "0-9%2"
    assert properties["standard_output"].endswith("/slurm-%A_%a.out")
    assert rest_v0038.submission_body(gpu_job(gpu_type=None), "x")["job"]["gres"] == "gpu:4"


def test_submitted_job_id_of_an_accepted_job() -> None:
    assert rest_v0038.submitted_job_id(*recorded("submit_ok")) == "53"


def test_a_held_job_is_submitted_despite_the_informational_error() -> None:
    assert rest_v0038.submitted_job_id(*recorded("submit_held")) == "56"


@pytest.mark.parametrize(
    ("fixture", "field", "words"),
    [
        ("submit_invalid_account", "account", "Invalid account"),
        ("submit_invalid_partition", "partition", "Invalid partition name"),
        ("submit_invalid_qos", "qos", "Invalid qos"),
        ("submit_invalid_feature", "constraints", "Invalid feature"),
        ("submit_invalid_array", "array", "Invalid job array"),
        ("submit_node_config_unavailable", None, "Requested node configuration is not available"),
    ],
)
def test_refusals_name_the_field(fixture: str, field: str | None, words: str) -> None:
    with pytest.raises(SlurmRejected) as caught:
        rest_v0038.submitted_job_id(*recorded(fixture))
    assert caught.value.field == field
    assert caught.value.message.startswith("Slurm refused the job: ")
    assert words in caught.value.message


def test_a_bad_token_is_unavailability_not_a_refusal() -> None:
    with pytest.raises(SlurmUnavailable, match="Zero Bytes"):
        rest_v0038.submitted_job_id(*recorded("submit_bad_token"))
    with pytest.raises(
        SlurmUnavailable, match=r"could not test: Unspecified error \(Slurm error -1\), HTTP 500"
    ):
        listing("jobs_bad_token")


@pytest.mark.parametrize("fixture", ["delete_running", "delete_held", "delete_ended", "delete_unknown"])
def test_cancel_answers_that_count_as_cancelled(fixture: str) -> None:
    rest_v0038.check_cancelled(*recorded(fixture))


def test_cancel_fails_on_other_errors() -> None:
    with pytest.raises(SlurmUnavailable, match="Unspecified error"):
        rest_v0038.check_cancelled(*recorded("jobs_bad_token"))


def test_live_observations_of_ended_running_and_pending_jobs() -> None:
    observed = live("jobs_live")
    ok, fail, gpu, held = observed["53"], observed["54"], observed["55"], observed["56"]
    assert (ok.state, ok.exit_code, ok.signal, ok.node_list, ok.gateway_job_id) == (
        "COMPLETED",
        0,
        None,
        "cpu01",
        "fx-ok",
    )
    assert ok.end_time == 1795325517 and ok.is_terminal
    assert (fail.state, fail.exit_code, fail.reason) == ("FAILED", 3, "NonZeroExitCode")
    assert (gpu.state, gpu.node_list, gpu.start_time, gpu.end_time, gpu.exit_code) == (
        "RUNNING",
        "gpu[01-02]",
        1795325517,
        None,
        None,
    )
    assert (held.state, held.reason, held.node_list, held.start_time, held.expected_start_time) == (
        "PENDING",
        "JobHeldUser",
        None,
        None,
        None,
    )
    assert held.submit_time == 1795325515


def test_an_array_is_running_while_a_task_runs_and_each_task_is_reported() -> None:
    observed = live("jobs_live")
    array = observed["57"]
    assert (array.slurm_job_id, array.state, array.gateway_job_id, array.end_time) == (
        "57",
        "RUNNING",
        "fx-array",
        None,
    )
    # Task 0 runs; tasks 1 and 2 are slurmctld's not yet split remainder "1-2%1".
    assert {key: observed[key].state for key in ("57_0", "57_1", "57_2")} == {
        "57_0": "RUNNING",
        "57_1": "PENDING",
        "57_2": "PENDING",
    }
    assert (observed["57_0"].node_list, observed["57_1"].reason) == ("cpu01", "JobArrayTaskLimit")


def test_a_single_array_task_can_be_polled() -> None:
    assert set(live("jobs_ended", ["57_1"])) == {"57_1"}
    assert live("jobs_ended", ["57_1"])["57_1"].state == "COMPLETED"


def test_live_observations_after_cancel_and_array_completion() -> None:
    observed = live("jobs_ended")
    assert (observed["55"].state, observed["55"].exit_code, observed["55"].signal) == ("CANCELLED", 0, 15)
    array = observed["57"]
    assert (array.state, array.start_time, array.end_time) == ("COMPLETED", 1795325517, 1795325530)


def test_accounting_observations() -> None:
    observed = accounting()
    assert (observed["53"].state, observed["53"].exit_code, observed["53"].gateway_job_id) == (
        "COMPLETED",
        0,
        "fx-ok",
    )
    # slurmdbd's v0.0.38 answer says SUCCESS/0 for this exit 3: unknown beats wrong.
    assert (observed["54"].state, observed["54"].exit_code) == ("FAILED", None)
    assert (observed["55"].state, observed["55"].node_list) == ("CANCELLED", "gpu[01-02]")
    held = observed["56"]
    assert (held.state, held.node_list, held.start_time, held.end_time) == (
        "CANCELLED",
        None,
        None,
        1795325520,
    )
    array = observed["57"]
    assert (array.state, array.start_time, array.end_time, array.gateway_job_id) == (
        "COMPLETED",
        1795325517,
        1795325530,
        "fx-array",
    )


def test_observations_only_for_requested_ids() -> None:
    assert set(live("jobs_live", ["54", "999"])) == {"54"}


def test_partition_capacities_match_sinfo_at_recording_time() -> None:
    capacities = {
        capacity.name: capacity
        for capacity in rest_v0038.partition_capacities(
            listing("partitions", "partitions"),
            listing("nodes_gpu_job_running", "nodes"),
            listing("jobs_live"),
        )
    }
    gpu, cpu = capacities["gpu"], capacities["cpu"]
    assert (gpu.total_nodes, gpu.allocated_nodes, gpu.idle_nodes) == (4, 2, 2)
    assert (gpu.total_gpus, gpu.allocated_gpus, gpu.idle_gpus, gpu.gpu_types) == (16, 4, 12, ("h100",))
    assert (cpu.total_nodes, cpu.allocated_nodes, cpu.idle_nodes, cpu.total_gpus, cpu.gpu_types) == (
        2,
        1,
        1,
        0,
        (),
    )
    # The held job and the array's two pending tasks wait in cpu (counted per task, as squeue --array).
    assert (gpu.pending_jobs, cpu.pending_jobs) == (0, 3)


def test_drained_nodes_are_neither_idle_nor_offering_gpus() -> None:
    node = {
        "name": "gpu01",
        "state": "idle",
        "state_flags": ["DRAIN"],
        "gres": "gpu:h100:4",
        "gres_used": "gpu:h100:0(IDX:N/A)",
        "partitions": ["gpu"],
    }
    (capacity,) = rest_v0038.partition_capacities([{"name": "gpu"}], [node], [])
    assert (capacity.idle_nodes, capacity.total_gpus, capacity.idle_gpus) == (0, 4, 0)


def test_paths_quote_their_parameters() -> None:
    assert rest_v0038.db_jobs_path(["53", "54"]) == "/slurmdb/v0.0.38/jobs?step=53%2C54"
    assert rest_v0038.job_path("53") == "/slurm/v0.0.38/job/53"
    assert rest_v0038.db_jobs_submitted_since_path("2026-11-22T05:00:00") == (
        "/slurmdb/v0.0.38/jobs?submit_time=2026-11-22T05%3A00%3A00"
    )


def test_array_outcome_is_the_worst_task() -> None:
    pairs = [(rest_v0038.live_keys(r), rest_v0038.live_observation(r)) for r in listing("jobs_ended")]
    failed_task = (["57_1"], rest_v0038.live_observation({**listing("jobs_ended")[1], "array_job_id": 57}))
    observed = rest_v0038.observations_for(["57"], [*pairs, failed_task])
    assert (observed["57"].state, observed["57"].exit_code) == ("FAILED", 3)


@pytest.mark.parametrize(
    ("task_string", "keys"),
    [
        ("1-2%1", ["9_1", "9_2"]),
        ("3,5-9:2", ["9_3", "9_5", "9_7", "9_9"]),
        ("0xE", ["9_1", "9_2", "9_3"]),
        ("0x5%2", ["9_0", "9_2"]),
    ],
)
def test_pending_remainders_expand_to_tasks(task_string: str, keys: list[str]) -> None:
    # slurmctld writes the remainder as a range list or, seen on this cluster, a hex bitmap.
    record = {"job_id": 9, "array_job_id": 9, "array_task_id": None, "array_task_string": task_string}
    assert rest_v0038.live_keys(record) == keys


def test_submission_body_waits_for_dependencies_with_afterok() -> None:
    properties = rest_v0038.submission_body(gpu_job(dependencies=("61", "62")), "x")["job"]
    assert properties["dependency"] == "afterok:61:62"
    assert "dependency" not in rest_v0038.submission_body(gpu_job(), "x")["job"]
    with pytest.raises(JobSpecError) as excinfo:
        rest_v0038.submission_body(gpu_job(dependencies=("61", "62,after:1")), "x")
    assert excinfo.value.field == "dependencies"


def test_every_submitted_property_is_in_the_v0038_schema() -> None:
    _, openapi = recorded("openapi_job_properties")
    known = openapi["components"]["schemas"]["v0.0.38_job_properties"]["properties"]
    job = gpu_job(qos="high", array="0-3", exclusive=True, dependencies=("61",))
    assert set(rest_v0038.submission_body(job, "x")["job"]) <= set(known)
    assert known["dependency"]["type"] == "string"


def test_a_signal_to_the_batch_shell_is_refused_before_slurmrestd() -> None:
    # 22.05's slurmrestd refuses "B:USR2@60" (recorded); only sbatch honours the "B:" prefix.
    status, answer = recorded("submit_signal_batch_shell")
    assert (status, answer["errors"][0]["error"]) == (400, "Invalid SIGNAL specification")
    with pytest.raises(JobSpecError) as excinfo:
        rest_v0038.submission_body(gpu_job(signal_before_limit_s=60), "x")
    assert excinfo.value.field == "signal_before_limit_s"


# The array recording: --array=0-9%2 (array 551), task 2 exits 3, task 5 is killed by SIGKILL.
def pairs_of(name: str, kind: str = "live") -> list[tuple[list[str], Any]]:
    if kind == "live":
        return [(rest_v0038.live_keys(r), rest_v0038.live_observation(r)) for r in listing(name)]
    return [(rest_v0038.accounting_keys(r), rest_v0038.accounting_observation(r)) for r in listing(name)]


def task_states(observation: Any) -> dict[int, tuple[str, str | None, int | None, int | None]]:
    return {t.task_id: (t.state, t.reason, t.exit_code, t.signal) for t in observation.array_tasks}


PENDING_TASK = ("PENDING", "JobArrayTaskLimit", None, None)
COMPLETED_TASK = ("COMPLETED", None, 0, None)


def test_a_running_array_reports_every_task_from_slurmctld() -> None:
    # slurmctld: 0-3 ended, 4-5 running, 6-9 the remainder "6-9%2".
    array = rest_v0038.observations_for(["551"], pairs_of("jobs_array_tasks"))["551"]
    assert (array.state, array.gateway_job_id) == ("RUNNING", "fixture-tasks")
    assert [task.task_id for task in array.array_tasks] == list(range(10))
    assert task_states(array) == {
        0: COMPLETED_TASK,
        1: COMPLETED_TASK,
        2: ("FAILED", None, 3, None),
        3: COMPLETED_TASK,
        4: ("RUNNING", None, None, None),
        5: ("RUNNING", None, None, None),
        **{task: PENDING_TASK for task in range(6, 10)},
    }


def test_an_ended_array_reports_each_exit_code_and_signal() -> None:
    array = rest_v0038.observations_for(["551"], pairs_of("jobs_array_ended"))["551"]
    tasks = task_states(array)
    assert (array.state, tasks[2], tasks[5]) == ("FAILED", ("FAILED", None, 3, None), ("FAILED", None, 0, 9))
    assert {tasks[task] for task in (0, 1, 3, 4, 6, 7, 8, 9)} == {COMPLETED_TASK}


def test_slurmdbd_pending_bitmap_counts_each_task() -> None:
    # slurmdbd writes the remainder as the bitmap "0x3C0" (tasks 6-9).
    array = rest_v0038.observations_for(["551"], pairs_of("db_jobs_array_tasks", "db"))["551"]
    assert [task.task_id for task in array.array_tasks] == list(range(10))
    assert {task.state for task in array.array_tasks if task.task_id >= 6} == {"PENDING"}


def test_tasks_slurmctld_forgot_come_once_from_slurmdbd_and_the_rest_from_slurmctld() -> None:
    # As the driver merges them: slurmdbd's pairs first, slurmctld's (later, winning) after.
    live_pairs = [pair for pair in pairs_of("jobs_array_ended") if pair[0][0] not in ("551_0", "551_5")]
    observed = rest_v0038.observations_for(["551"], [*pairs_of("db_jobs_array_ended", "db"), *live_pairs])
    tasks = task_states(observed["551"])
    assert [task.task_id for task in observed["551"].array_tasks] == list(range(10))
    # Task 2 from slurmctld keeps its exit 3 (slurmdbd says SUCCESS/0 for it); 0 and 5 only
    # slurmdbd still knows: 5's signal survives there.
    assert (tasks[0], tasks[2], tasks[5]) == (
        COMPLETED_TASK,
        ("FAILED", None, 3, None),
        ("FAILED", None, 0, 9),
    )


def test_slurmdbd_knowing_none_of_the_jobs_is_an_empty_listing() -> None:
    assert listing("db_jobs_nothing_found") == []


def test_an_array_id_is_summarised_from_its_tasks_even_beside_a_bare_record_of_it() -> None:
    # slurmdbd can still hold the array's pending meta record under the bare id ("551") after
    # the tasks ran (seen in the suite); that record must not hide the tasks.
    meta = JobObservation(slurm_job_id="551", state="PENDING", gateway_job_id="sgw_x")
    observed = rest_v0038.observations_for(["551"], [(["551"], meta), *pairs_of("jobs_array_ended")])
    assert len(observed["551"].array_tasks) == 10
    assert "551_0" in observed
