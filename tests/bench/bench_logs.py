"""Live logs: latency from a line written by a job on a compute node to its arrival at an SSE
client of GET /v1/jobs/{id}/logs/stream, vs a `tail -F`-style poll of the same file in the same
run; and the gateway's CPU cost of 200 concurrent streams of one busy job vs one stream.

Last line: JSON with both figures and their baselines.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import NamedTuple

import httpx

from tests.bench.bench_submit import wait_for_slurm_id
from tests.bench.gateway_process import BENCH_TENANT, RunningGateway, http_json, percentile, running_gateway

LATENCY_SECONDS = 20
# Each line carries its own wall-clock time; the compute nodes share this machine's clock. The
# first lines wait a moment so the clients are connected before any byte is written.
LATENCY_SCRIPT = f"""sleep 3
SECONDS=0
i=0
while [ "$SECONDS" -lt {LATENCY_SECONDS} ]; do
  i=$((i + 1))
  printf 'line %d %s\\n' "$i" "$(date +%s.%N)"
  sleep 0.05
done
"""
LINE = re.compile(rb"^line (\d+) (\d+\.\d+)$")
TAIL_POLL_S = 0.01

SUBSCRIBERS = 200
CPU_WINDOW_S = 8.0
STOP_FILE = "bench-stop"
# ~15 KB/s of 100-byte lines (measured) until the benchmark creates STOP_FILE in the working
# directory (the job's cwd); capped so a lost benchmark cannot leave it running.
BUSY_SCRIPT = f"""pad=$(printf '%080d' 0)
SECONDS=0
while [ ! -e {STOP_FILE} ] && [ "$SECONDS" -lt 150 ]; do
  printf 'busy %s %s\\n' "$SECONDS" "$pad"
  printf 'busy %s %s\\n' "$SECONDS" "$pad"
  sleep 0.01
done
"""
CLIENT_TIMEOUT = httpx.Timeout(30.0, read=60.0)
END_TIMEOUT_S = 90.0


class SseEvent(NamedTuple):
    """One server-sent event."""

    event: str
    id: str | None
    data: str


# Plain classes, not dataclasses: run_benchmarks.py loads this file as a module that is not in
# sys.modules, where @dataclass fails.
class LogFollower:
    """What one SSE client of a log stream received, checked for gaps as it arrived."""

    def __init__(self, start_offset: int) -> None:
        self.start_offset = start_offset
        self.offset = start_offset
        self.body = bytearray()
        self.events = 0
        self.gaps = 0
        self.truncated = 0
        self.end: dict[str, object] | None = None
        self.end_arrived_at: float | None = None
        self.first_event = asyncio.Event()


class LineLatencies:
    """Latency of each timestamped job line: arrival time (when the byte that completed it came)
    minus the time the job embedded in it. Feed it the output's bytes in order."""

    def __init__(self) -> None:
        self.pending = bytearray()
        self.latency_by_seq: dict[int, float] = {}

    def feed(self, chunk: bytes, arrived_at: float) -> None:
        """Take the next bytes of the output, received at ``arrived_at`` (time.time())."""
        self.pending += chunk
        *complete, rest = bytes(self.pending).split(b"\n")
        self.pending = bytearray(rest)
        for line in complete:
            match = LINE.match(line)
            if match:
                self.latency_by_seq[int(match[1])] = arrived_at - float(match[2])


def submit_script_job(gateway: RunningGateway, name: str, script: str, time_limit: str) -> str:
    """POST a runtime-script job on partition cpu; return its gateway id."""
    spec = {"name": name, "runtime": "script", "script": script, "partition": "cpu", "time_limit": time_limit}
    status, body = http_json("POST", f"{gateway.base_url}/v1/jobs", gateway.user_token, spec)
    if status != 202:
        raise RuntimeError(f"submission refused: {status} {body}")
    return str(body["id"])


def wait_for_log_file(gateway: RunningGateway, job_id: str, timeout_s: float = 180) -> Path:
    """The job's stdout file (<working dir>/slurm-<slurm id>.out), once Slurm created it (job started)."""
    wait_for_slurm_id(gateway, job_id, timeout_s=timeout_s)
    _, job = http_json("GET", f"{gateway.base_url}/v1/jobs/{job_id}", gateway.user_token)
    path = gateway.job_root / BENCH_TENANT / job_id / f"slurm-{job['slurm_job_id']}.out"
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} not created in {timeout_s} s (job {job_id} not started?)")
        time.sleep(0.05)
    return path


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """Parse a text/event-stream body into events (comments and keep-alives skipped)."""
    event, event_id, data = "message", None, []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield SseEvent(event, event_id, "\n".join(data))
            event, event_id, data = "message", None, []
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "id":
            event_id = value
        elif name == "data":
            data.append(value)


async def follow_log(
    client: httpx.AsyncClient,
    gateway: RunningGateway,
    job_id: str,
    follower: LogFollower,
    on_bytes: Callable[[bytes, float], None] | None = None,
) -> None:
    """Stream the job's stdout from ``follower.start_offset`` until the `end` event."""
    url = f"{gateway.base_url}/v1/jobs/{job_id}/logs/stream"
    params = {"stream": "stdout", "offset": str(follower.start_offset)}
    headers = {"Authorization": f"Bearer {gateway.user_token}", "Accept": "text/event-stream"}
    async with client.stream("GET", url, params=params, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"log stream: HTTP {response.status_code} {(await response.aread())[:300]!r}")
        async for sse in sse_events(response):
            arrived_at = time.time()
            follower.events += 1
            follower.first_event.set()
            payload = json.loads(sse.data)
            if sse.event == "end":
                follower.end, follower.end_arrived_at = payload, arrived_at
                return
            if sse.event == "truncated":
                follower.truncated += 1
                follower.offset = 0
                continue
            if sse.event != "log":
                continue
            chunk = payload["text"].encode() if "text" in payload else base64.b64decode(payload["base64"])
            if payload["offset"] != follower.offset or int(sse.id or -1) != follower.offset + len(chunk):
                follower.gaps += 1
            follower.offset = int(sse.id or follower.offset + len(chunk))
            follower.body += chunk
            if on_bytes is not None:
                on_bytes(chunk, arrived_at)


def poll_file(path: Path, lines: LineLatencies, stop: threading.Event) -> None:
    """The baseline: open the file and read its new bytes every TAIL_POLL_S, like `tail -F`."""
    offset = 0
    while True:
        stopping = stop.is_set()
        with path.open("rb") as handle:
            handle.seek(offset)
            chunk = handle.read()
        if chunk:
            lines.feed(chunk, time.time())
            offset += len(chunk)
        if stopping:
            return
        time.sleep(TAIL_POLL_S)


def latency_summary(lines: LineLatencies) -> dict[str, object]:
    """p50/p99/max in ms over every line received."""
    samples = list(lines.latency_by_seq.values())
    if not samples:
        return {"lines": 0}
    return {
        "lines": len(samples),
        "p50_ms": round(percentile(samples, 0.5) * 1000, 1),
        "p99_ms": round(percentile(samples, 0.99) * 1000, 1),
        "max_ms": round(max(samples) * 1000, 1),
    }


async def measure_latency(gateway: RunningGateway) -> dict[str, object]:
    """Stream a job's timestamped lines over SSE while polling its file directly."""
    job_id = submit_script_job(gateway, "bench-logs-latency", LATENCY_SCRIPT, time_limit="2")
    path = wait_for_log_file(gateway, job_id)
    print(f"latency job {job_id} running, output {path}", flush=True)
    sse_lines, tail_lines = LineLatencies(), LineLatencies()
    stop_tail = threading.Event()
    tail = threading.Thread(target=poll_file, args=(path, tail_lines, stop_tail), daemon=True)
    tail.start()
    follower = LogFollower(start_offset=0)
    try:
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as client:
            await asyncio.wait_for(
                follow_log(client, gateway, job_id, follower, sse_lines.feed),
                timeout=LATENCY_SECONDS + END_TIMEOUT_S,
            )
    except TimeoutError:
        print("latency: no `end` event in time", flush=True)
    finally:
        stop_tail.set()
        await asyncio.to_thread(tail.join)
    file_bytes = path.read_bytes()
    last_line_at = max((float(m[2]) for m in map(LINE.match, file_bytes.split(b"\n")) if m), default=None)
    end_delay = None
    if follower.end_arrived_at is not None and last_line_at is not None:
        end_delay = round(follower.end_arrived_at - last_line_at, 2)
    return {
        "gateway_sse": latency_summary(sse_lines),
        "baseline_file_poll_10ms": latency_summary(tail_lines),
        "lines_written": sum(bool(LINE.match(line)) for line in file_bytes.split(b"\n")),
        "sse_bytes_match_file": bytes(follower.body) == file_bytes,
        "sse_gaps": follower.gaps,
        "end_event": follower.end,
        "end_event_after_last_line_s": end_delay,
    }


def gateway_cpu_seconds(pid: int) -> float:
    """utime + stime of the process, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat(5); fields[0] here is field 3 (the state).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gateway_read_calls(pid: int) -> int:
    """read()-family system calls of the process so far (syscr in /proc/<pid>/io): file reads and
    the database's, not socket receives, so it shows whether file reads grow with subscribers."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/io has no syscr")


async def gateway_cost_over_window(pid: int) -> tuple[float, int]:
    """The gateway's (CPU seconds, read calls) over CPU_WINDOW_S of wall time."""
    cpu, reads = gateway_cpu_seconds(pid), gateway_read_calls(pid)
    await asyncio.sleep(CPU_WINDOW_S)
    return gateway_cpu_seconds(pid) - cpu, gateway_read_calls(pid) - reads


async def start_followers(
    client: httpx.AsyncClient, gateway: RunningGateway, job_id: str, count: int, start_offset: int
) -> tuple[list[LogFollower], list[asyncio.Task[None]]]:
    """Open ``count`` streams from ``start_offset``; return once every one has had an event."""
    followers = [LogFollower(start_offset=start_offset) for _ in range(count)]
    tasks = [asyncio.create_task(follow_log(client, gateway, job_id, f)) for f in followers]
    deadline = time.monotonic() + 60
    while not all(f.first_event.is_set() for f in followers):
        failed = [t.exception() for t in tasks if t.done() and not t.cancelled() and t.exception()]
        if failed or time.monotonic() > deadline:
            await stop_followers(tasks)
            raise RuntimeError(f"{count} log streams: {failed[0] if failed else 'no event within 60 s'}")
        await asyncio.sleep(0.05)
    return followers, tasks


async def stop_followers(tasks: list[asyncio.Task[None]]) -> None:
    """Drop the streams (the client goes away)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def measure_fan_out(gateway: RunningGateway) -> dict[str, object]:
    """Gateway CPU while one busy job's log is streamed to 0, 1 and SUBSCRIBERS clients."""
    job_id = submit_script_job(gateway, "bench-logs-busy", BUSY_SCRIPT, time_limit="3")
    path = wait_for_log_file(gateway, job_id)
    print(f"busy job {job_id} running, output {path}", flush=True)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT, limits=limits) as client:
        size_before = path.stat().st_size
        idle_cpu, idle_reads = await gateway_cost_over_window(gateway.pid)
        write_rate = (path.stat().st_size - size_before) / CPU_WINDOW_S
        print(f"0 subscribers: {idle_cpu:.2f} CPU s", flush=True)

        _, one_task = await start_followers(client, gateway, job_id, 1, path.stat().st_size)
        one_cpu, one_reads = await gateway_cost_over_window(gateway.pid)
        await stop_followers(one_task)
        print(f"1 subscriber: {one_cpu:.2f} CPU s", flush=True)

        connect_start, connect_cpu_start = time.monotonic(), gateway_cpu_seconds(gateway.pid)
        start_offset = path.stat().st_size
        followers, tasks = await start_followers(client, gateway, job_id, SUBSCRIBERS, start_offset)
        connect_s = time.monotonic() - connect_start
        connect_cpu = gateway_cpu_seconds(gateway.pid) - connect_cpu_start
        many_cpu, many_reads = await gateway_cost_over_window(gateway.pid)
        print(f"{SUBSCRIBERS} subscribers: {many_cpu:.2f} CPU s (connecting: {connect_s:.1f} s)", flush=True)

        (path.parent / STOP_FILE).touch()
        _, pending = await asyncio.wait(tasks, timeout=END_TIMEOUT_S)
        await stop_followers(list(pending))
    expected = path.read_bytes()[start_offset:]
    digests = {hashlib.sha256(f.body).hexdigest() for f in followers}
    return {
        "subscribers": SUBSCRIBERS,
        "window_s": CPU_WINDOW_S,
        "job_write_bytes_per_s": round(write_rate),
        "gateway_cpu_s": {
            "no_subscriber": round(idle_cpu, 2),
            "one_subscriber": round(one_cpu, 2),
            f"{SUBSCRIBERS}_subscribers": round(many_cpu, 2),
        },
        "gateway_read_calls": {
            "no_subscriber": idle_reads,
            "one_subscriber": one_reads,
            f"{SUBSCRIBERS}_subscribers": many_reads,
        },
        "ratio_many_vs_one": round(many_cpu / one_cpu, 1) if one_cpu else None,
        "ratio_many_vs_one_above_idle": (
            round((many_cpu - idle_cpu) / (one_cpu - idle_cpu), 1) if one_cpu > idle_cpu else None
        ),
        "connect_200": {"wall_s": round(connect_s, 2), "gateway_cpu_s": round(connect_cpu, 2)},
        "streams_ended": sum(f.end is not None for f in followers),
        "streams_with_gaps": sum(f.gaps > 0 for f in followers),
        "identical_bytes": len(digests) == 1,
        "bytes_match_file": all(bytes(f.body) == expected for f in followers),
        "bytes_per_stream": len(expected),
    }


def main() -> None:
    """Run the live-log benchmark and print its JSON result last."""
    with running_gateway() as gateway:
        latency = asyncio.run(measure_latency(gateway))
        print(f"latency: {json.dumps(latency)}", flush=True)
        fan_out = asyncio.run(measure_fan_out(gateway))
    print(json.dumps({"benchmark": "logs", "line_to_sse_latency": latency, "fan_out_cpu": fan_out}))


if __name__ == "__main__":
    main()
