from typing import Any

import pytest

from slurm.batch_job import BatchJob
from slurm.errors import JobSpecError
from slurm.job_validation import (
    DEFAULT_MAX_ARRAY_SIZE,
    MAX_ARGUMENT_BYTES,
    MAX_ENV_TOTAL_CHARS,
    MAX_ENV_VALUE_CHARS,
    MAX_ENV_VARIABLES,
    MAX_SCRIPT_BYTES,
    check_command,
    check_no_control_characters,
    check_script_body,
    check_slurm_name,
    validate_array_spec,
    validate_batch_job,
    validate_env,
)

CONTROL_CHARACTERS = [chr(code) for code in range(0x20)] + ["\x7f", "\x85", "\x9f"]


def make_job(**changes: Any) -> BatchJob:
    fields: dict[str, Any] = {
        "gateway_job_id": "01J0ABCDEF",
        "name": "train",
        "unix_user": "alice",
        "account": "physics",
        "partition": "gpu",
        "working_dir": "/var/lib/slurm-gateway/jobs/01J0ABCDEF",
        "time_limit_minutes": 60,
        "command": ("python3", "train.py"),
    }
    fields.update(changes)
    return BatchJob(**fields)


def field_of(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(JobSpecError) as excinfo:
        call(*args, **kwargs)
    return excinfo.value.field


# --- control characters --------------------------------------------------------


@pytest.mark.parametrize("char", CONTROL_CHARACTERS, ids=[f"U+{ord(c):04X}" for c in CONTROL_CHARACTERS])
def test_every_control_character_is_rejected(char: str) -> None:
    with pytest.raises(JobSpecError) as excinfo:
        check_no_control_characters("name", f"ab{char}cd")
    assert excinfo.value.field == "name"
    assert "position 2" in excinfo.value.message


def test_allowed_control_characters_pass_and_others_still_fail() -> None:
    check_no_control_characters("command[1]", "a\nb\tc", allowed="\n\t")
    assert field_of(check_no_control_characters, "command[1]", "a\rb", allowed="\n\t") == "command[1]"


def test_unpaired_surrogates_are_rejected() -> None:
    with pytest.raises(JobSpecError, match="UTF-8"):
        check_no_control_characters("env.X", "a\udc80")


def test_printable_unicode_passes() -> None:
    check_no_control_characters("env.X", "héllo wörld ✓ 日本語 \U0001f600")


# --- names ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["train", "a.b-c_d+e", "X" * 128, "0"])
def test_slurm_names_on_the_allow_list_pass(value: str) -> None:
    assert check_slurm_name("name", value, what="job name") == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "two words",
        "a#b",
        "a'b",
        'a"b',
        "a\\b",
        "a;b",
        "a$(x)",
        "a`x`",
        "a/b",
        "a,b",
        "a&b",
        "a=b",
        "a\nb",
        "a\n#SBATCH --uid=0",
        "a\rb",
        "a\x00b",
        "é",
        "X" * 129,
        None,
    ],
)
def test_slurm_names_off_the_allow_list_are_rejected(value: str) -> None:
    assert field_of(check_slurm_name, "account", value, what="account") == "account"


# --- env -----------------------------------------------------------------------


def test_ordinary_env_passes() -> None:
    validate_env(
        {
            "OMP_NUM_THREADS": "4",
            "PATH": "/opt/bin:/usr/bin",
            "_X1": "",
            "OMPI_MCA_PML": "ob1",
            "MSG": "it's $(not run) `either` ; && | \\ \" ✓",
        }
    )


@pytest.mark.parametrize("name", ["http_proxy", "OMPI_MCA_btl", "Path"])
def test_env_names_must_be_upper_case(name: str) -> None:
    with pytest.raises(JobSpecError, match="upper-case") as refused:
        validate_env({name: "x"})
    assert refused.value.field == "env"


@pytest.mark.parametrize(
    "name",
    [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "LD_DEBUG",
        "BASH_ENV",
        "ENV",
        "IFS",
        "PS4",
        "SHELLOPTS",
        "BASHOPTS",
        "PROMPT_COMMAND",
        "BASH_XTRACEFD",
        "GLOBIGNORE",
        "SLURM_ACCOUNT",
        "SLURM_EXPORT_ENV",
        "SBATCH_ACCOUNT",
        "SRUN_CPUS_PER_TASK",
        "SALLOC_PARTITION",
        "PMIX_RANK",
        "PMI_RANK",
        "SGW_OUTPUT_DIR",
        "SGW_STEP",
    ],
)
def test_denied_env_names_are_rejected_naming_the_variable(name: str) -> None:
    with pytest.raises(JobSpecError) as excinfo:
        validate_env({name: "x"})
    assert excinfo.value.field == f"env.{name}"
    assert "cannot be set" in excinfo.value.message or "reserved" in excinfo.value.message


@pytest.mark.parametrize("name", ["1ABC", "1abc", "A-B", "A B", "A.B", "", "É", "A=B", "X" * 129])
def test_malformed_env_names_are_rejected(name: str) -> None:
    with pytest.raises(JobSpecError, match="ASCII letters"):
        validate_env({name: "x"})


@pytest.mark.parametrize("name", ["A\nB", "A\x00", "BASH_FUNC_x%%"])
def test_malformed_env_names_are_not_echoed_into_the_field(name: str) -> None:
    assert field_of(validate_env, {name: "x"}) == "env"


@pytest.mark.parametrize("char", CONTROL_CHARACTERS, ids=[f"U+{ord(c):04X}" for c in CONTROL_CHARACTERS])
def test_env_values_reject_every_control_character(char: str) -> None:
    assert field_of(validate_env, {"GOOD": "x", "BAD": f"1{char}2"}) == "env.BAD"


def test_env_size_limits() -> None:
    validate_env({"BIG": "x" * MAX_ENV_VALUE_CHARS})
    assert field_of(validate_env, {"BIG": "x" * (MAX_ENV_VALUE_CHARS + 1)}) == "env.BIG"
    assert field_of(validate_env, {f"V{i}": "" for i in range(MAX_ENV_VARIABLES + 1)}) == "env"
    half = MAX_ENV_TOTAL_CHARS // 2
    assert field_of(validate_env, {"A": "x" * half, "B": "x" * half}) == "env"


def test_env_values_must_be_strings() -> None:
    assert field_of(validate_env, {"N": 5}) == "env.N"


# --- arrays --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["0", "7", "0-99", "0-99%8", "1,3,5-7", "0-15:4", "0-15:4%2", "1,2,3%1", "1000", "0-1000", "5-5"]
)
def test_valid_array_specs_are_returned_unchanged(text: str) -> None:
    assert validate_array_spec(text) == text


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("1001", "too large"),
        ("0-1001", "too large"),
        ("5,2000", "too large"),
        ("9-3", "ends before"),
        ("0-15:0", "step"),
        ("0-99%0", "positive"),
        ("0-99%", "positive"),
        ("0-99%x", "positive"),
        ("0-99%8%2", "positive"),
        ("-1", "not an index"),
        ("1,,2", "not an index"),
        ("1,", "not an index"),
        ("a-b", "not an index"),
        ("1:4", "not an index"),
        ("0-15:4:2", "not an index"),
        ("1 ,2", "not an index"),
        ("1-5;touch x", "not an index"),
        ("1\n#SBATCH --uid=0", "control character"),
        ("\u0661", "not an index"),
        ("12345678", "not an index"),
        ("1," * 600, "at most"),
    ],
)
def test_invalid_array_specs_are_rejected(text: str, fragment: str) -> None:
    with pytest.raises(JobSpecError) as excinfo:
        validate_array_spec(text)
    assert excinfo.value.field == "array"
    assert fragment in excinfo.value.message


def test_array_bound_follows_the_cluster_max_array_size() -> None:
    assert DEFAULT_MAX_ARRAY_SIZE == 1001
    assert validate_array_spec("0-4999", max_array_size=5000) == "0-4999"
    assert field_of(validate_array_spec, "0-5000", max_array_size=5000) == "array"


# --- command and script --------------------------------------------------------


def test_command_accepts_shell_metacharacters_newlines_and_tabs() -> None:
    check_command(["printf", "%s\n", "$(touch x); `y` && | \\ ' \"", "line1\nline2\tx"])


@pytest.mark.parametrize(
    ("command", "field"),
    [
        ([], "command"),
        ([""], "command[0]"),
        (["echo", "a\x00b"], "command[1]"),
        (["echo", "ok", "a\rb"], "command[2]"),
        (["echo", "a\x1bb"], "command[1]"),
        (["echo", "x" * (MAX_ARGUMENT_BYTES + 1)], "command[1]"),
        (["echo", *(["x" * 100_000] * 11)], "command"),
    ],
)
def test_bad_commands_are_rejected(command: list[str], field: str) -> None:
    assert field_of(check_command, command) == field


def test_script_body_is_the_users_code() -> None:
    check_script_body("#!/bin/bash\n#SBATCH --uid=0\necho $(hostname) `date`\x1b[0m\tdone\n")


@pytest.mark.parametrize(
    ("script", "fragment"),
    [
        ("", "empty"),
        ("  \n\n", "empty"),
        ("echo a\x00b\n", "NUL"),
        ("echo hi\r\n", "Windows"),
        ("echo \udc80\n", "UTF-8"),
        ("#" * (MAX_SCRIPT_BYTES + 1), "at most"),
    ],
)
def test_bad_script_bodies_are_rejected(script: str, fragment: str) -> None:
    with pytest.raises(JobSpecError) as excinfo:
        check_script_body(script)
    assert excinfo.value.field == "script"
    assert fragment in excinfo.value.message


# --- whole jobs ----------------------------------------------------------------


def test_a_reasonable_job_validates() -> None:
    validate_batch_job(
        make_job(
            qos="normal",
            nodes=2,
            tasks_per_node=4,
            cpus_per_task=2,
            gpus_per_node=4,
            gpu_type="h100",
            memory_mb_per_node=4000,
            constraints=("ib", "h100"),
            env={"A": "b"},
            array="0-3",
            step_name="post-process_2.v1",
            dependencies=("1", "4294967295", "12_0", "12_1000"),
            heartbeat="program",
            heartbeat_interval_s=60,
            signal_before_limit_s=3599,
        )
    )
    validate_batch_job(make_job(command=None, script="echo hi\n"))
    validate_batch_job(make_job(heartbeat="off", heartbeat_interval_s=1, signal_before_limit_s=10))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"gateway_job_id": "a b"}, "gateway_job_id"),
        ({"gateway_job_id": ""}, "gateway_job_id"),
        ({"gateway_job_id": "x" * 65}, "gateway_job_id"),
        ({"name": "x\n#SBATCH --uid=0"}, "name"),
        ({"name": "my job"}, "name"),
        ({"unix_user": "root;id"}, "unix_user"),
        ({"unix_user": "Alice"}, "unix_user"),
        ({"unix_user": "-alice"}, "unix_user"),
        ({"unix_user": "a" * 33}, "unix_user"),
        ({"account": "acct#x"}, "account"),
        ({"partition": "gpu cpu"}, "partition"),
        ({"qos": "hi'gh"}, "qos"),
        ({"qos": ""}, "qos"),
        ({"working_dir": "relative/dir"}, "working_dir"),
        ({"working_dir": "/var/tmp/with space"}, "working_dir"),
        ({"working_dir": "/var/tmp/%j"}, "working_dir"),
        ({"working_dir": "/var/tmp/a#b"}, "working_dir"),
        ({"working_dir": "/var/tmp/../../etc"}, "working_dir"),
        ({"working_dir": "/var/tmp/x\n#SBATCH --uid=0"}, "working_dir"),
        ({"time_limit_minutes": 0}, "time_limit"),
        ({"nodes": 0}, "nodes"),
        ({"nodes": True}, "nodes"),
        ({"tasks_per_node": 0}, "tasks_per_node"),
        ({"cpus_per_task": -1}, "cpus_per_task"),
        ({"gpus_per_node": -1}, "gpus_per_node"),
        ({"gpus_per_node": 65}, "gpus_per_node"),
        ({"gpu_type": "h100"}, "gpu_type"),
        ({"gpus_per_node": 1, "gpu_type": "h100:9"}, "gpu_type"),
        ({"memory_mb_per_node": 0}, "memory_mb_per_node"),
        ({"constraints": ("ib", "h100|a100")}, "constraints[1]"),
        ({"constraints": ("ib&x",)}, "constraints[0]"),
        ({"env": {"LD_PRELOAD": "/x.so"}}, "env.LD_PRELOAD"),
        ({"array": "0-99%0"}, "array"),
        ({"command": None}, "command"),
        ({"script": "echo both"}, "command"),
        ({"command": ("echo", "a\x00")}, "command[1]"),
        ({"command": None, "script": "echo\r\n"}, "script"),
        ({"step_name": ""}, "step_name"),
        ({"step_name": "."}, "step_name"),
        ({"step_name": ".."}, "step_name"),
        ({"step_name": ".hidden"}, "step_name"),
        ({"step_name": "a/b"}, "step_name"),
        ({"step_name": "../x"}, "step_name"),
        ({"step_name": "two words"}, "step_name"),
        ({"step_name": "x" * 129}, "step_name"),
        ({"step_name": "a\nb"}, "step_name"),
        ({"step_name": None}, "step_name"),
        ({"dependencies": ("",)}, "dependencies[0]"),
        ({"dependencies": ("0",)}, "dependencies[0]"),
        ({"dependencies": ("012",)}, "dependencies[0]"),
        ({"dependencies": ("12", "abc")}, "dependencies[1]"),
        ({"dependencies": ("12_",)}, "dependencies[0]"),
        ({"dependencies": ("12_x",)}, "dependencies[0]"),
        ({"dependencies": ("12_[1-3]",)}, "dependencies[0]"),
        ({"dependencies": ("12:13",)}, "dependencies[0]"),
        ({"dependencies": ("12,13",)}, "dependencies[0]"),
        ({"dependencies": ("afterany:12",)}, "dependencies[0]"),
        ({"dependencies": ("12345678901",)}, "dependencies[0]"),
        ({"dependencies": ("\u0661",)}, "dependencies[0]"),
        ({"dependencies": (12,)}, "dependencies[0]"),
        ({"dependencies": tuple(str(i) for i in range(1, 66))}, "dependencies"),
        ({"heartbeat": "sometimes"}, "heartbeat"),
        ({"heartbeat_interval_s": 0}, "heartbeat_interval_s"),
        ({"heartbeat_interval_s": 61}, "heartbeat_interval_s"),
        ({"heartbeat_interval_s": True}, "heartbeat_interval_s"),
        ({"signal_before_limit_s": 9}, "signal_before_limit_s"),
        ({"signal_before_limit_s": 65536}, "signal_before_limit_s"),
        ({"signal_before_limit_s": 3600}, "signal_before_limit_s"),
        ({"signal_before_limit_s": "60"}, "signal_before_limit_s"),
    ],
)
def test_each_bad_field_is_named(changes: dict[str, Any], field: str) -> None:
    assert field_of(validate_batch_job, make_job(**changes)) == field


def test_a_signal_before_the_time_limit_must_leave_time_to_run() -> None:
    with pytest.raises(JobSpecError, match="shorter than the time limit") as excinfo:
        validate_batch_job(make_job(time_limit_minutes=1, signal_before_limit_s=60))
    assert excinfo.value.field == "signal_before_limit_s"
    validate_batch_job(make_job(time_limit_minutes=1, signal_before_limit_s=59))
