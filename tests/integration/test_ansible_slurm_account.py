"""The slurm_account Ansible module run for real (`ansible localhost -m slurm_account`) against
slurmdbd: create a QOS with limits and an account using it, modify a QOS limit (then a no-op
re-run), check mode changes nothing, --diff shows the compared fields, add and remove a user
association. Every name is a fresh scratch name, removed afterwards."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.slurm_cluster import run_command

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

REPO = Path(__file__).parents[2]
ANSIBLE = Path(sys.executable).parent / "ansible"
# The default callback prints any --diff first, then "localhost | CHANGED => {result as JSON}".
RESULT_LINE = re.compile(r"^localhost \| [A-Z]+!? => ", re.MULTILINE)


def run_module(arguments: dict, *options: str) -> tuple[dict, str]:
    """Run slurm_account once on localhost (local connection); its result and the printed diff."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    argv = [
        str(ANSIBLE),
        "localhost",
        "--inventory=localhost,",
        "--connection=local",
        f"--extra-vars=ansible_python_interpreter={sys.executable}",
        "--module-name=slurm_account",
        f"--args={json.dumps(arguments)}",
        *options,
    ]
    completed = subprocess.run(
        argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False
    )
    found = RESULT_LINE.search(completed.stdout)
    assert found, f"no result from ansible: {completed.stdout[-2000:]} {completed.stderr[-2000:]}"
    return json.loads(completed.stdout[found.end() :]), completed.stdout[: found.start()]


def show(*argv: str) -> str:
    return run_command(["sacctmgr", "--noheader", "--parsable2", "show", *argv]).stdout.strip()


@pytest.fixture
def names() -> Iterator[dict[str, str]]:
    """Fresh QOS, account and user names; whatever exists of them is removed afterwards."""
    suffix = uuid.uuid4().hex[:8]
    created = {"qos": f"sgw_ans_q_{suffix}", "account": f"sgw_ans_a_{suffix}", "user": f"sgw_ans.u_{suffix}"}
    yield created
    for kind in ("user", "account", "qos"):
        run_command(
            ["sacctmgr", "--immediate", "remove", kind, "where", f"name={created[kind]}"], check=False
        )


def test_qos_account_and_user_association_lifecycle(names: dict[str, str]) -> None:
    qos, account, user = names["qos"], names["account"], names["user"]
    qos_format = "format=Name,GrpTRES,MaxTRESPU,MaxWall,GrpSubmit,Flags"

    created, _ = run_module(
        {
            "kind": "qos",
            "name": qos,
            "limits": {
                "GrpTRES": "gres/gpu=8,cpu=64",
                "MaxTRESPerUser": "gres/gpu=2",
                "MaxWall": "2-00:00:00",
                "GrpSubmitJobs": 100,
                "Flags": "DenyOnLimit",
            },
        }
    )
    assert created["changed"] is True, created
    assert show("qos", "where", f"name={qos}", qos_format) == (
        f"{qos}|cpu=64,gres/gpu=8|gres/gpu=2|2-00:00:00|100|DenyOnLimit"
    )

    account_args = {"kind": "account", "name": account, "qos": ["normal", qos], "default_qos": qos}
    assert run_module(account_args)[0]["changed"] is True
    row = show("associations", "where", f"accounts={account}", "format=Account,User,QOS,DefaultQOS")
    name, user_name, allowed, default = row.split("|")
    assert (name, user_name, set(allowed.split(",")), default) == (account, "", {"normal", qos}, qos)

    # Check mode reports the change with its diff and leaves slurmdbd alone.
    wider = {"kind": "qos", "name": qos, "limits": {"MaxWall": "3-00:00:00", "GrpTRES": "gres/gpu=16"}}
    checked, diff = run_module(wider, "--check", "--diff")
    assert checked["changed"] is True
    assert checked["commands"] == [
        [
            "sacctmgr",
            "--immediate",
            "modify",
            "qos",
            "where",
            f"name={qos}",
            "set",
            "MaxWall=3-00:00:00",
            "GrpTRES=gres/gpu=16,cpu=-1",
        ]
    ]
    assert f"--- before: slurm qos {qos}" in diff
    for line in ('-    "GrpTRES": "cpu=64,gres/gpu=8",', '+    "GrpTRES": "gres/gpu=16",'):
        assert line in diff.splitlines()
    for line in ('-    "MaxWall": "2-00:00:00",', '+    "MaxWall": "3-00:00:00",'):
        assert line in diff.splitlines()
    assert show("qos", "where", f"name={qos}", "format=MaxWall,GrpTRES") == "2-00:00:00|cpu=64,gres/gpu=8"

    assert run_module(wider)[0]["changed"] is True
    assert show("qos", "where", f"name={qos}", "format=MaxWall,GrpTRES") == "3-00:00:00|gres/gpu=16"
    again, _ = run_module(wider, "--check")
    assert again["changed"] is False
    assert again["commands"] == []
    assert run_module(account_args)[0]["changed"] is False

    # A user name with a dot (john.doe style), on the dev cluster's association only.
    association = {
        "kind": "user",
        "name": user,
        "account": account,
        "cluster": "dev",
        "limits": {"MaxJobs": 4},
    }
    assert run_module(association)[0]["changed"] is True
    assert (
        show("associations", "where", f"users={user}", "format=Account,User,MaxJobs") == f"{account}|{user}|4"
    )

    removed, diff = run_module({**association, "state": "absent"}, "--diff")
    assert removed["changed"] is True
    assert '+    "state": "absent"' in diff.splitlines()
    assert show("associations", "where", f"users={user}", "format=Account,User") == ""


def test_invalid_limit_fails_before_any_command(names: dict[str, str]) -> None:
    result, _ = run_module({"kind": "qos", "name": names["qos"], "limits": {"MaxWall": "1 day; rm"}})
    assert result == {"changed": False, "msg": "limits: MaxWall='1 day; rm' is not a valid minutes value"}
    assert show("qos", "where", f"name={names['qos']}", "format=Name") == ""
