"""The Ansible roles' production (systemd) mode, validation and lint, without touching the cluster.

Every playbook here runs against the example-site inventory with a local connection and writes
only under tmp_path: the Slurm configuration is rendered by the roles' own task files into a
scratch directory, validation runs with deliberately broken variables, and the slurmrestd drop-in
is checked by systemd-analyze against Debian's unit.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

REPO_ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO_ROOT / "ansible"
VENV_BIN = REPO_ROOT / ".venv" / "bin"
EXAMPLE_SITE = ANSIBLE_DIR / "inventories" / "example-site" / "hosts.yml"
DEBIAN_UNIT_DIR = Path("/lib/systemd/system")
# Facts of a host large enough for every node group of the example site.
BIG_HOST_MEMORY_MB = 4_000_000


def ansible_env() -> dict[str, str]:
    """The environment of ansible-playbook and ansible-lint: the project's config, the venv first."""
    return {
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "ANSIBLE_NOCOLOR": "1",
    }


def run_playbook(playbook: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a playbook on the example site with every host reached through a local connection."""
    return subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            str(EXAMPLE_SITE),
            "-e",
            "ansible_connection=local",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            str(playbook),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=ansible_env(),
    )


def write_playbook(path: Path, plays: list[dict[str, Any]]) -> Path:
    """Write plays as YAML (the task files they include are the roles' own)."""
    path.write_text(yaml.safe_dump(plays, sort_keys=False))
    return path


def host_facts(memtotal_mb: int = BIG_HOST_MEMORY_MB) -> dict[str, Any]:
    """Stand-in facts of an example-site host: its hostname is its inventory name."""
    return {"hostname": "{{ inventory_hostname }}", "memtotal_mb": memtotal_mb}


def render_playbook(tmp_path: Path) -> Path:
    """Validate the example site and render its Slurm configuration and slurmrestd drop-in."""
    config_dir = tmp_path / "etc-slurm"
    facts_file = tmp_path / "config-facts.json"
    return write_playbook(
        tmp_path / "render.yml",
        [
            {
                "name": "Render the example site's configuration into a scratch directory",
                "hosts": "slurmctl01",
                "gather_facts": False,
                "vars": {
                    "ansible_facts": host_facts(),
                    "common_slurm_config_dir": str(config_dir),
                    "common_restart_marker_dir": str(tmp_path),
                },
                "roles": ["slurm_defaults"],
                "tasks": [
                    {
                        "name": "Validate",
                        "ansible.builtin.include_role": {"name": "common", "tasks_from": "validate"},
                    },
                    {
                        "name": "Render slurm.conf, gres.conf and topology.conf",
                        "ansible.builtin.include_role": {"name": "common", "tasks_from": "slurm_config"},
                    },
                    {
                        "name": "Render slurmrestd's drop-in",
                        "ansible.builtin.template": {
                            "src": str(ANSIBLE_DIR / "roles/slurmrestd/templates/slurmrestd-jwt.conf.j2"),
                            "dest": str(tmp_path / "slurmrestd-jwt.conf"),
                            "mode": "0644",
                        },
                    },
                    {
                        "name": "Record the reload/restart decision",
                        # Check mode decides too; only this record is written.
                        "check_mode": False,
                        "ansible.builtin.copy": {
                            "content": "{{ {'changed': slurm_config_changed, "
                            "'restart': slurm_config_restart_needed} | to_json }}",
                            "dest": str(facts_file),
                            "mode": "0644",
                        },
                    },
                ],
            }
        ],
    )


def pending_markers(marker_dir: Path) -> list[str]:
    """The restarts and reloads a render left pending in marker_dir."""
    return sorted(p.name for p in marker_dir.glob(".ansible-*-pending-*"))


def decision(tmp_path: Path) -> dict[str, bool]:
    """What the last render decided: did the configuration change, and does it need a restart."""
    return json.loads((tmp_path / "config-facts.json").read_text())


@pytest.fixture(scope="module")
def rendered_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the example site rendered once from nothing (etc-slurm/, the drop-in)."""
    root = tmp_path_factory.mktemp("example-site")
    (root / "etc-slurm").mkdir()
    result = run_playbook(render_playbook(root))
    assert result.returncode == 0, result.stdout[-4000:]
    return root


def test_ansible_lint_production_profile_is_clean() -> None:
    result = subprocess.run(
        [str(VENV_BIN / "ansible-lint")],
        cwd=ANSIBLE_DIR,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=ansible_env(),
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "Profile 'production' was required, and it passed" in result.stdout + result.stderr


def test_example_site_renders_a_production_slurm_conf(rendered_site: Path) -> None:
    tmp_path = rendered_site
    slurm_conf = (tmp_path / "etc-slurm" / "slurm.conf").read_text()
    lines = slurm_conf.splitlines()
    assert "SlurmctldHost=slurmctl01" in lines
    assert "AccountingStorageHost=slurmdbd01" in lines
    assert "SlurmdPort=6818" in lines
    assert "SlurmdSpoolDir=/var/spool/slurmd" in lines
    # Nothing of dev mode's emulation reaches a real site.
    assert "config_overrides" not in slurm_conf
    assert "NodeAddr=127.0.0.1" not in slurm_conf
    assert (
        "NodeName=h100n01 CPUs=112 RealMemory=2050000 Features=ib,h100 Gres=gpu:h100:8 State=UNKNOWN" in lines
    )
    assert "NodeName=cpun16 CPUs=128 RealMemory=510000 Features=ib,cpu State=UNKNOWN" in lines
    gpu_nodes = ",".join([f"h100n{i:02d}" for i in range(1, 9)] + [f"a100n{i:02d}" for i in range(1, 5)])
    assert f"PartitionName=gpu Nodes={gpu_nodes} Default=NO MaxTime=2-00:00:00 State=UP" in lines
    assert "GresTypes=gpu" in lines
    # systemd mode confines and tracks jobs with cgroups.
    assert "ProctrackType=proctrack/cgroup" in lines
    assert "TaskPlugin=task/cgroup,task/affinity" in lines
    assert "JobAcctGatherType=jobacct_gather/cgroup" in lines
    cgroup_conf = (tmp_path / "etc-slurm" / "cgroup.conf").read_text().splitlines()
    for line in (
        "CgroupPlugin=autodetect",
        "ConstrainCores=yes",
        "ConstrainDevices=yes",
        "ConstrainRAMSpace=yes",
    ):
        assert line in cgroup_conf
    # Secrets are referenced by path, never inlined.
    assert "StoragePass" not in slurm_conf
    assert "AuthAltParameters=jwt_key=/var/lib/slurm/slurmctld/jwt_hs256.key" in lines

    gres_conf = (tmp_path / "etc-slurm" / "gres.conf").read_text().splitlines()
    h100_nodes = ",".join(f"h100n{i:02d}" for i in range(1, 9))
    assert f"NodeName={h100_nodes} Name=gpu Type=h100 File=/dev/nvidia[0-7]" in gres_conf
    topology = (tmp_path / "etc-slurm" / "topology.conf").read_text().splitlines()
    assert "SwitchName=ib-leaf1 Nodes=h100n[01-04]" in topology
    assert "SwitchName=ib-spine Switches=ib-leaf1,ib-leaf2,ib-leaf3,ib-leaf4" in topology

    assert decision(tmp_path) == {"changed": True, "restart": True}
    # The restarts wait on the host until they are done: the controller host runs slurmctld and
    # slurmrestd, no slurmd.
    assert pending_markers(tmp_path) == [
        ".ansible-reload-pending-slurmctld",
        ".ansible-restart-pending-slurmctld",
        ".ansible-restart-pending-slurmrestd",
    ]


def test_slurmrestd_drop_in_passes_systemd_analyze(rendered_site: Path, tmp_path: Path) -> None:
    unit_dir = tmp_path / "units"
    (unit_dir / "slurmrestd.service.d").mkdir(parents=True)
    shutil.copy(DEBIAN_UNIT_DIR / "slurmrestd.service", unit_dir)
    drop_in = (rendered_site / "slurmrestd-jwt.conf").read_text()
    (unit_dir / "slurmrestd.service.d" / "jwt.conf").write_text(drop_in)
    assert "ExecStart=/usr/sbin/slurmrestd $SLURMRESTD_OPTIONS -a rest_auth/jwt 127.0.0.1:6820" in drop_in
    assert "User=slurmrestd" in drop_in

    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit_dir / "slurmrestd.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        # The trailing colon keeps the default search path after ours, for the units it names.
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:"},
    )
    assert verify.returncode == 0, verify.stderr
    assert "jwt.conf" not in verify.stderr, verify.stderr


def test_config_changes_reload_or_restart_and_check_mode_shows_the_diff(
    rendered_site: Path, tmp_path: Path
) -> None:
    shutil.copytree(rendered_site / "etc-slurm", tmp_path / "etc-slurm")
    playbook = render_playbook(tmp_path)
    slurm_conf = tmp_path / "etc-slurm" / "slurm.conf"

    again = run_playbook(playbook)
    assert again.returncode == 0, again.stdout[-4000:]
    assert decision(tmp_path) == {"changed": False, "restart": False}

    # SlurmdTimeout is applied by a reload; check mode shows the line and writes nothing.
    before = slurm_conf.read_text()
    check = run_playbook(playbook, "--check", "--diff", "-e", "slurm_slurmd_timeout=120")
    assert check.returncode == 0, check.stdout[-4000:]
    assert "-SlurmdTimeout=300" in check.stdout
    assert "+SlurmdTimeout=120" in check.stdout
    assert decision(tmp_path) == {"changed": True, "restart": False}
    assert slurm_conf.read_text() == before
    assert pending_markers(tmp_path) == []

    # A reload-class change leaves only reloads pending (slurmrestd always restarts).
    reload = run_playbook(playbook, "-e", "slurm_slurmd_timeout=120")
    assert reload.returncode == 0, reload.stdout[-4000:]
    assert pending_markers(tmp_path) == [
        ".ansible-reload-pending-slurmctld",
        ".ansible-restart-pending-slurmrestd",
    ]

    # A port is read only at start.
    changed = run_playbook(playbook, "-e", "slurm_ctld_port=6917")
    assert changed.returncode == 0, changed.stdout[-4000:]
    assert decision(tmp_path) == {"changed": True, "restart": True}
    assert "SlurmctldPort=6917" in slurm_conf.read_text().splitlines()

    # cgroup.conf is read at start only.
    cgroup = {"CgroupPlugin": "autodetect", "ConstrainCores": "yes", "ConstrainRAMSpace": "no"}
    relaxed = run_playbook(
        playbook, "-e", "slurm_ctld_port=6917", "-e", json.dumps({"slurm_cgroup_conf": cgroup})
    )
    assert relaxed.returncode == 0, relaxed.stdout[-4000:]
    assert decision(tmp_path) == {"changed": True, "restart": True}
    assert "ConstrainRAMSpace=no" in (tmp_path / "etc-slurm" / "cgroup.conf").read_text().splitlines()


def test_dev_mode_keeps_process_tracking_without_cgroups(tmp_path: Path) -> None:
    (tmp_path / "etc-slurm").mkdir()
    result = run_playbook(render_playbook(tmp_path), "-e", "slurm_service_manager=dev")
    assert result.returncode == 0, result.stdout[-4000:]
    lines = (tmp_path / "etc-slurm" / "slurm.conf").read_text().splitlines()
    assert "ProctrackType=proctrack/linuxproc" in lines
    assert "TaskPlugin=task/none" in lines
    assert "JobAcctGatherType=jobacct_gather/linux" in lines
    # Dev mode is one machine: slurmdbd is reached on loopback.
    assert "AccountingStorageHost=localhost" in lines
    assert not (tmp_path / "etc-slurm" / "cgroup.conf").exists()


EXAMPLE_GROUPS = {
    "h100": [f"h100n{i:02d}" for i in range(1, 9)],
    "cpu": [f"cpun{i:02d}" for i in range(1, 17)],
}


def node_groups(h100_gres: dict[str, Any], cpu_nodes: list[str]) -> list[dict[str, Any]]:
    """A two-group cluster description with the given gres on the h100 group."""
    return [
        {
            "name": "h100",
            "nodes": EXAMPLE_GROUPS["h100"],
            "cpus": 112,
            "real_memory_mb": 2050000,
            "gres": [h100_gres],
        },
        {"name": "cpu", "nodes": cpu_nodes, "cpus": 128, "real_memory_mb": 510000},
    ]


GOOD_GRES = {"name": "gpu", "type": "h100", "count": 8, "file": "/dev/nvidia[0-7]"}
TWO_PARTITIONS = [{"name": "gpu", "node_groups": ["h100"]}, {"name": "cpu", "node_groups": ["cpu"]}]

# case: (variables that break it, memory of the host, a phrase of the expected failure)
VALIDATION_CASES: dict[str, tuple[dict[str, Any], int, str]] = {
    "valid": ({}, BIG_HOST_MEMORY_MB, "ok"),
    "ports": ({"slurm_dbd_port": 6817}, BIG_HOST_MEMORY_MB, "slurmctld and slurmdbd both use port 6817"),
    "dev_node_ports": (
        {"slurm_service_manager": "dev", "slurm_rest_port": 6825},
        BIG_HOST_MEMORY_MB,
        "slurmd and slurmrestd both use port 6825",
    ),
    "no_partition": (
        {"slurm_partitions": [{"name": "cpu", "node_groups": ["cpu"]}]},
        BIG_HOST_MEMORY_MB,
        "node group h100 is in no partition",
    ),
    "memory": ({}, 1000, "node group h100 sets real_memory_mb=2050000 but h100n01 has 1000 MB"),
    "unknown_gres": (
        {
            "slurm_node_groups": node_groups({**GOOD_GRES, "name": "tpu"}, EXAMPLE_GROUPS["cpu"]),
            "slurm_partitions": TWO_PARTITIONS,
        },
        BIG_HOST_MEMORY_MB,
        "gres tpu of node group h100 needs name (gpu or nic)",
    ),
    "mps_gres": (
        {
            "slurm_node_groups": node_groups(
                {"name": "mps", "type": "h100", "count": 800, "file": "/dev/nvidia[0-7]"},
                EXAMPLE_GROUPS["cpu"],
            ),
            "slurm_partitions": TWO_PARTITIONS,
        },
        BIG_HOST_MEMORY_MB,
        "gres mps of node group h100 is not supported by these roles yet",
    ),
    "gres_range": (
        {
            "slurm_node_groups": node_groups(
                {**GOOD_GRES, "file": "/dev/nvidia[0-3]"}, EXAMPLE_GROUPS["cpu"]
            ),
            "slurm_partitions": TWO_PARTITIONS,
        },
        BIG_HOST_MEMORY_MB,
        "has count 8 but File=/dev/nvidia[0-3] names 4 devices",
    ),
    "duplicate_node": (
        {
            "slurm_node_groups": node_groups(GOOD_GRES, [*EXAMPLE_GROUPS["cpu"], "h100n02"]),
            "slurm_partitions": TWO_PARTITIONS,
        },
        BIG_HOST_MEMORY_MB,
        "nodes listed more than once: h100n02 (node groups h100, cpu)",
    ),
}


def test_validation_fails_early_with_the_offending_names(tmp_path: Path) -> None:
    plays = []
    for case, (overrides, memtotal_mb, _) in VALIDATION_CASES.items():
        outcome = tmp_path / f"{case}.txt"
        write = {"ansible.builtin.copy": {"dest": str(outcome), "mode": "0644"}}
        plays.append(
            {
                "name": f"Validation case {case}",
                # A GPU compute host, so the compute-host checks run too.
                "hosts": "h100n01",
                "gather_facts": False,
                "vars": {**overrides, "ansible_facts": host_facts(memtotal_mb)},
                "tasks": [
                    {
                        "name": "Validate and record the outcome",
                        "block": [
                            {
                                "name": "Validate",
                                "ansible.builtin.include_role": {"name": "common", "tasks_from": "validate"},
                            },
                            {
                                "name": "Record success",
                                **{k: {**v, "content": "ok"} for k, v in write.items()},
                            },
                        ],
                        "rescue": [
                            {
                                "name": "Record the failure",
                                **{
                                    k: {**v, "content": "{{ ansible_failed_result | to_json }}"}
                                    for k, v in write.items()
                                },
                            }
                        ],
                    }
                ],
            }
        )
    result = run_playbook(write_playbook(tmp_path / "validate.yml", plays))
    assert result.returncode == 0, result.stdout[-4000:]
    for case, (_, _, expected) in VALIDATION_CASES.items():
        outcome = (tmp_path / f"{case}.txt").read_text()
        if case == "valid":
            assert outcome == "ok", outcome[:2000]
        else:
            assert expected in outcome, f"{case}: {outcome[:2000]}"


def tasks_in(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tasks of a task list, those inside blocks included (blocks themselves left out)."""
    found = []
    for task in tasks:
        if "block" in task:
            found += tasks_in(task["block"] + task.get("rescue", []) + task.get("always", []))
        else:
            found.append(task)
    return found


def test_tasks_that_handle_secrets_are_no_log() -> None:
    secret_markers = (
        "slurmdbd_storage_pass",
        "common_secret.content",
        "/dev/urandom",
        "shared_secret_b64 }}",
    )
    checked = 0
    for task_file in sorted((ANSIBLE_DIR / "roles").glob("slurm*/tasks/*.yml")) + sorted(
        (ANSIBLE_DIR / "roles").glob("common/tasks/*.yml")
    ):
        for task in tasks_in(yaml.safe_load(task_file.read_text()) or []):
            if any(marker in json.dumps(task) for marker in secret_markers):
                checked += 1
                assert task.get("no_log") is True, f"{task_file.name}: {task['name']}"
    assert checked >= 6
    dbd_tasks = yaml.safe_load((ANSIBLE_DIR / "roles/slurmdbd/tasks/main.yml").read_text())
    (render,) = [
        t for t in dbd_tasks if t.get("ansible.builtin.template", {}).get("src") == "slurmdbd.conf.j2"
    ]
    assert render["diff"] is False
    assert render["no_log"] is True


# case: (a key file at the path before the run, the vault variable, expected outcome)
SECRET_CASES: dict[str, tuple[bytes | None, str, str]] = {
    "source_without_key": (None, "", "is missing on slurmctl01, the host it is copied from"),
    "source_with_key": (b"key of slurmctl01", "", "changed=False"),
    "vault": (b"an older key", base64.b64encode(b"\x00vault\xffkey\n").decode(), "changed=True"),
}


def test_secret_source_is_the_inventory_host_even_outside_the_play(tmp_path: Path) -> None:
    # Every host is this machine (local connection), so the source host slurmctl01, outside the
    # play, is reached through delegate_to at the same path the play host reads.
    plays = []
    for case, (existing, vault_b64, _) in SECRET_CASES.items():
        key = tmp_path / f"{case}.key"
        if existing is not None:
            key.write_bytes(existing)
        outcome = {"ansible.builtin.copy": {"dest": str(tmp_path / f"{case}.txt"), "mode": "0644"}}
        plays.append(
            {
                "name": f"Secret case {case}",
                "hosts": "h100n01",
                "gather_facts": False,
                "tasks": [
                    {
                        "name": "Distribute the secret and record the outcome",
                        "block": [
                            {
                                "name": "Distribute",
                                "ansible.builtin.include_role": {
                                    "name": "common",
                                    "tasks_from": "shared_secret",
                                },
                                "vars": {
                                    "shared_secret_path": str(key),
                                    "shared_secret_owner": "root",
                                    "shared_secret_bytes": 32,
                                    "shared_secret_b64": vault_b64,
                                    "shared_secret_b64_name": "slurm_munge_key_b64",
                                },
                            },
                            {
                                "name": "Record success",
                                **{
                                    k: {**v, "content": "changed={{ common_secret_changed }}"}
                                    for k, v in outcome.items()
                                },
                            },
                        ],
                        "rescue": [
                            {
                                "name": "Record the failure",
                                **{
                                    k: {**v, "content": "{{ ansible_failed_result | to_json }}"}
                                    for k, v in outcome.items()
                                },
                            }
                        ],
                    }
                ],
            }
        )
    result = run_playbook(write_playbook(tmp_path / "secrets.yml", plays))
    assert result.returncode == 0, result.stdout[-4000:]
    for case, (_, _, expected) in SECRET_CASES.items():
        outcome = (tmp_path / f"{case}.txt").read_text()
        assert expected in outcome, f"{case}: {outcome[:2000]}"
    # Nothing was made up on a source outside the play; the vault's bytes arrive exactly.
    assert not (tmp_path / "source_without_key.key").exists()
    assert (tmp_path / "source_with_key.key").read_bytes() == b"key of slurmctl01"
    assert (tmp_path / "vault.key").read_bytes() == b"\x00vault\xffkey\n"
