"""Job logs over HTTP end to end: real app, database and Slurm; the job writes, the API reads.

A job prints numbered lines for a few seconds and random bytes on stderr. Ranges, tails and the
SSE stream (dropped mid-way and resumed with Last-Event-ID) give back exactly the file Slurm
wrote; another tenant gets 404 and bad parameters 422 naming them.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from gateway.config import GatewayConfig, WorkerConfig
from gateway.job_admission import job_working_dir
from tests.integration.gateway_fixtures import (
    TokenFactory,
    bearer_headers,
    gateway_config,
    migrated_database,
    token_for,
)
from tests.integration.job_api_helpers import create_tenant, drain_accounts, wait_for_job
from tests.integration.live_server import served

__all__ = ["gateway_config", "migrated_database", "token_for"]

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

TENANT = "sgw_logs_a"
OTHER_TENANT = "sgw_logs_b"
FAST_WORKERS = WorkerConfig(enabled=True, submit_interval_s=0.2, poll_interval_s=0.5, max_backoff_s=2)
ENDED = ("completed", "failed", "cancelled", "timeout", "node_fail", "out_of_memory", "preempted", "hung")
LINES = 30
RANK_LINES = 'for i in 1 2 3 4; do echo "rank $SLURM_PROCID line $i"; sleep 1; done'
SCRIPT = (
    f'for i in $(seq 1 {LINES}); do echo "line $i: héllo wörld"; sleep 0.1; done\n'
    "head -c 5000 /dev/urandom >&2\n"
)


@pytest.fixture(autouse=True)
def idle_accounts() -> Iterator[None]:
    yield
    drain_accounts([TENANT, OTHER_TENANT])


@pytest.fixture
def config(gateway_config: GatewayConfig) -> GatewayConfig:
    return msgspec.structs.replace(gateway_config, workers=FAST_WORKERS)


@pytest.fixture
def client(config: GatewayConfig, migrated_database: str) -> Iterator[httpx.Client]:
    # A real server: the streams must be read as they are sent, not once complete.
    with served(config) as client:
        yield client


@pytest.fixture
def tokens(client: httpx.Client, token_for: TokenFactory) -> dict[str, str]:
    admin = token_for("root-admin", None, ["admin"])
    create_tenant(client, admin, TENANT, {"alice": "alice"})
    create_tenant(client, admin, OTHER_TENANT, {"bob": "bob"})
    return {"alice": token_for("alice", TENANT, ["user"]), "bob": token_for("bob", OTHER_TENANT, ["user"])}


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """Parse an SSE body line by line into {event, id, data} dicts (comments skipped)."""
    event: dict[str, str] = {}
    for line in lines:
        if not line:
            if event:
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")


def chunk_bytes(event: dict[str, str]) -> bytes:
    data = json.loads(event["data"])
    return base64.b64decode(data["base64"]) if "base64" in data else data["text"].encode()


def read_stream(
    client: httpx.Client,
    url: str,
    token: str,
    *,
    resume: str | None = None,
    stop_after: int | None = None,
) -> tuple[bytes, list[dict[str, str]]]:
    """The bytes of the stream's log events, and every event; ``stop_after`` log events drop it."""
    headers = bearer_headers(token)
    if resume is not None:
        headers["Last-Event-ID"] = resume
    content = b""
    events: list[dict[str, str]] = []
    with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in sse_events(response.iter_lines()):
            events.append(event)
            if event.get("event") == "log":
                assert json.loads(event["data"])["offset"] == (int(resume or 0) + len(content))
                content += chunk_bytes(event)
                assert event["id"] == str(int(resume or 0) + len(content))
            if event.get("event") == "end" or (stop_after is not None and len(events) >= stop_after):
                break
    return content, events


def test_logs_read_tail_and_stream_with_resume(
    client: httpx.Client, tokens: dict[str, str], config: GatewayConfig
) -> None:
    alice = tokens["alice"]
    response = client.post(
        "/v1/jobs",
        json={"name": "logs", "script": SCRIPT, "partition": "cpu", "time_limit": "2"},
        headers=bearer_headers(alice),
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    base = f"/v1/jobs/{job_id}/logs"

    early = client.get(base, headers=bearer_headers(alice))
    assert early.status_code == 200
    assert early.headers["x-log-offset"] == "0"

    wait_for_job(client, alice, job_id, lambda view: view["state"] in ("running", *ENDED))
    first, events = read_stream(client, f"{base}/stream", alice, stop_after=3)
    assert first, events
    assert all(event.get("event") != "end" for event in events), "dropped mid-stream"
    resume = [event for event in events if event.get("event") == "log"][-1]["id"]
    rest, resumed_events = read_stream(client, f"{base}/stream", alice, resume=resume)
    end = json.loads(resumed_events[-1]["data"])
    assert resumed_events[-1]["event"] == "end"
    assert end["state"] == "completed"
    assert end["exit_code"] == 0

    view = wait_for_job(client, alice, job_id, lambda view: view["state"] in ENDED)
    on_disk = (
        Path(job_working_dir(config.slurm.job_root, TENANT, job_id)) / f"slurm-{view['slurm_job_id']}.out"
    )
    expected = on_disk.read_bytes()
    assert first + rest == expected
    assert end["offset"] == len(expected)
    assert expected.count(b"\n") == LINES

    whole = client.get(base, params={"offset": "5", "limit": "20"}, headers=bearer_headers(alice))
    assert whole.status_code == 200
    assert whole.content == expected[5:25]
    assert whole.headers["x-log-next-offset"] == "25"
    assert whole.headers["x-log-size"] == str(len(expected))
    tail = client.get(base, params={"tail": "2"}, headers=bearer_headers(alice))
    assert tail.content == "line 29: héllo wörld\nline 30: héllo wörld\n".encode()

    # Binary stderr: base64 events, byte for byte.
    binary, _ = read_stream(client, f"{base}/stream?stream=stderr", alice)
    assert len(binary) == 5000
    raw = client.get(base, params={"stream": "stderr", "limit": "10000"}, headers=bearer_headers(alice))
    assert raw.content == binary

    # Another tenant: 404, no byte of the log.
    for url in (base, f"{base}/stream"):
        refused = client.get(url, headers=bearer_headers(tokens["bob"]))
        assert refused.status_code == 404
        assert b"line" not in refused.content

    bad: list[tuple[dict[str, Any], str]] = [
        ({"stream": "stdin"}, "stream"),
        ({"offset": "-1"}, "offset"),
        ({"offset": str(10**15)}, "offset"),
        ({"limit": str(1 << 30)}, "limit"),
        ({"step": "x"}, "step"),
        ({"task": "1"}, "task"),
        ({"attempt": "9"}, "attempt"),
        ({"tail": "0"}, "tail"),
    ]
    for params, field in bad:
        response = client.get(base, params=params, headers=bearer_headers(alice))
        assert response.status_code == 422, (params, response.text)
        assert field in response.text


def test_a_running_mpi_jobs_output_arrives_live(client: httpx.Client, tokens: dict[str, str]) -> None:
    alice = tokens["alice"]
    response = client.post(
        "/v1/jobs",
        json={
            "name": "logs-mpi",
            "runtime": "mpi",
            "command": ["bash", "-c", RANK_LINES],
            "partition": "cpu",
            "nodes": 2,
            "tasks_per_node": 2,
            "time_limit": "2",
        },
        headers=bearer_headers(alice),
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    wait_for_job(client, alice, job_id, lambda view: view["state"] in ("running", *ENDED))

    first_arrival = None
    content = b""
    with client.stream("GET", f"/v1/jobs/{job_id}/logs/stream", headers=bearer_headers(alice)) as stream:
        for event in sse_events(stream.iter_lines()):
            if event.get("event") == "log":
                first_arrival = first_arrival or time.time()
                content += chunk_bytes(event)
            if event.get("event") == "end":
                assert json.loads(event["data"])["state"] == "completed"
                break
    view = wait_for_job(client, alice, job_id, lambda view: view["state"] in ENDED)
    lines = content.decode().splitlines()
    # 4 ranks on 2 nodes, 4 lines each, and the first came while the job still ran.
    assert sorted(lines) == sorted(f"rank {rank} line {i}" for rank in range(4) for i in range(1, 5))
    ended_at = datetime.fromisoformat(view["ended_at"]).timestamp()
    assert first_arrival is not None and first_arrival < ended_at - 1
