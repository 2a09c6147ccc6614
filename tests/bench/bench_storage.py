"""Storage on S3 (the shared test SeaweedFS): upload and stage-in throughput through the gateway vs
raw s3fs moving the same bytes in the same run, and the gateway's memory during a 1 GiB upload.

- Upload: ``PUT /v1/files/{path}`` streaming N bytes (http.client, generator body with a
  Content-Length) vs raw s3fs writing the same chunks to the same SeaweedFS through
  ``open(..., "wb", block_size=<the store's part size>)``: a streaming multipart upload like the
  gateway's own, with the same s3fs settings (staging.object_store builds both filesystems), and no local temp
  file whose disk reads would skew the baseline.
- Memory: the gateway process's VmRSS sampled every 50 ms while it receives a 1 GiB upload;
  peak growth over the RSS just before it (taken after the throughput uploads, so one-time
  start-up allocations are not counted as growth).
- Stage-in: jobs whose input is a stored file; the gateway's own ``staging.stage_in_seconds``
  (claim to record: working dir, read, sha256, write, fsync) vs raw s3fs reading the same blob
  (4 MiB reads, the stager's chunk size) into a file in the same job root, fsynced likewise.

Throughput runs alternate gateway and baseline (SGW_BENCH_STORAGE_ROUNDS each, default 2, each
side first every other round) and report the best of each beside every run: other work on this
shared machine only ever slows a run down.

Needs ``eval "$(dev/test-services env)"`` (SGW_TEST_S3_*). Sizes in MiB: SGW_BENCH_UPLOAD_MB
(512), SGW_BENCH_MEMORY_UPLOAD_MB (1024), SGW_BENCH_STAGE_IN_MB (256). Everything written under
the run's ``bench-<uuid>`` prefix and in the job root is removed afterwards.
Last line: JSON with the gateway's figures beside the raw s3fs baselines.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.job_states import STAGING_IN, TERMINAL_STATES
from staging.object_store import DEFAULT_READ_CHUNK_BYTES, ObjectStore, ObjectStoreSettings
from tests.bench.gateway_process import (
    BENCH_TENANT,
    RunningGateway,
    S3Storage,
    http_json,
    running_gateway,
)

MIB = 1024 * 1024
GIB = 1024 * MIB
UPLOAD_MB = int(os.environ.get("SGW_BENCH_UPLOAD_MB", "512"))
MEMORY_UPLOAD_MB = int(os.environ.get("SGW_BENCH_MEMORY_UPLOAD_MB", "1024"))
STAGE_IN_MB = int(os.environ.get("SGW_BENCH_STAGE_IN_MB", "256"))
# Gateway and baseline runs each, alternating which goes first.
ROUNDS = int(os.environ.get("SGW_BENCH_STORAGE_ROUNDS", "2"))
BODY_CHUNK_BYTES = 8 * MIB
RSS_SAMPLE_INTERVAL_S = 0.05
STAGING_TIMEOUT_S = 120.0
JOB_END_TIMEOUT_S = 60.0
# Seldom enough to take little CPU from the gateway's transfer (it times the transfer itself).
JOB_POLL_INTERVAL_S = 0.2
STAGE_IN_SOURCE = "bench/stage-in.bin"
STAGE_IN_JOB = {
    "name": "bench-stage-in",
    "runtime": "script",
    "command": ["true"],
    "partition": "cpu",
    "time_limit": "1",
    "inputs": [{"path": "in.bin", "source": STAGE_IN_SOURCE}],
}


def body_chunks(total_bytes: int, chunk_bytes: int = BODY_CHUNK_BYTES) -> Iterator[bytes]:
    """``total_bytes`` of incompressible-looking data: one random block, each copy with its own
    leading counter, so no chunk repeats and the whole body is never in memory."""
    block = os.urandom(chunk_bytes)
    sent = 0
    index = 0
    while sent < total_bytes:
        size = min(chunk_bytes, total_bytes - sent)
        yield (index.to_bytes(8, "big") + block[8:size])[:size]
        sent += size
        index += 1


def mb_per_s(nbytes: int, seconds: float) -> float:
    """Throughput in MB/s (10^6 bytes)."""
    return round(nbytes / seconds / 1e6, 1)


def put_via_gateway(gateway: RunningGateway, path: str, nbytes: int) -> float:
    """Stream ``nbytes`` to ``PUT /v1/files/{path}``; return the seconds until the response."""
    url = urlsplit(gateway.base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
    headers = {
        "Authorization": f"Bearer {gateway.user_token}",
        "Content-Length": str(nbytes),
        "Content-Type": "application/octet-stream",
    }
    try:
        start = time.perf_counter()
        connection.request("PUT", f"/v1/files/{path}", body=body_chunks(nbytes), headers=headers)
        response = connection.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - start
    finally:
        connection.close()
    if response.status not in (200, 201):
        raise RuntimeError(f"PUT /v1/files/{path}: {response.status} {body[:500]!r}")
    stored = json.loads(body)
    if stored.get("size") != nbytes:
        raise RuntimeError(f"PUT /v1/files/{path} stored {stored.get('size')} bytes, not {nbytes}")
    return elapsed


def put_via_s3fs(store: ObjectStore, key: str, nbytes: int) -> float:
    """Write the same chunks straight to S3 with s3fs (the store's part size, as the gateway writes)."""
    start = time.perf_counter()
    with store.filesystem.open(store.full_path(key), "wb", block_size=store.block_bytes) as handle:
        for chunk in body_chunks(nbytes):
            handle.write(chunk)
    return time.perf_counter() - start


def get_via_s3fs(store: ObjectStore, key: str, destination: Path) -> tuple[float, int]:
    """Copy the blob into ``destination`` (read loop, write, fsync); return (seconds, bytes)."""
    start = time.perf_counter()
    copied = 0
    with (
        store.filesystem.open(
            store.full_path(key), "rb", block_size=DEFAULT_READ_CHUNK_BYTES, cache_type="none"
        ) as source,
        destination.open("wb") as target,
    ):
        while data := source.read(DEFAULT_READ_CHUNK_BYTES):
            target.write(data)
            copied += len(data)
        target.flush()
        os.fsync(target.fileno())
    return time.perf_counter() - start, copied


class RssSampler:
    """Samples a process's VmRSS every ``interval_s`` in a thread; keeps the peak (KiB)."""

    def __init__(self, pid: int, interval_s: float = RSS_SAMPLE_INTERVAL_S) -> None:
        """Start sampling ``pid`` at once."""
        self._status = Path(f"/proc/{pid}/status")
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.samples = 0
        self.peak_kib = self.rss_kib()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def rss_kib(self) -> int:
        """The process's resident set size now, in KiB."""
        for line in self._status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS in {self._status}")

    def stop(self) -> None:
        """Stop sampling, taking one last sample."""
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, self.rss_kib())

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.peak_kib = max(self.peak_kib, self.rss_kib())
            self.samples += 1


def measure_upload_memory(gateway: RunningGateway, nbytes: int) -> dict[str, float | int]:
    """Upload ``nbytes`` while sampling the gateway's RSS; its growth and the upload's speed."""
    sampler = RssSampler(gateway.pid)
    before_kib = sampler.peak_kib
    try:
        elapsed = put_via_gateway(gateway, "bench/memory.bin", nbytes)
    finally:
        sampler.stop()
    return {
        "upload_mb": nbytes // MIB,
        "rss_before_mib": round(before_kib / 1024, 1),
        "rss_peak_mib": round(sampler.peak_kib / 1024, 1),
        "rss_peak_growth_mib": round((sampler.peak_kib - before_kib) / 1024, 1),
        "samples": sampler.samples,
        "gateway_mb_s": mb_per_s(nbytes, elapsed),
    }


def blob_keys(store: ObjectStore) -> set[str]:
    """Keys (relative to the store's root) of the bench tenant's blobs."""
    prefix = store.full_path(f"{BENCH_TENANT}/blobs")
    if not store.filesystem.exists(prefix):
        return set()
    root = store.full_path("")
    return {path.removeprefix(root) for path in store.filesystem.find(prefix)}


def wait_for_job(
    gateway: RunningGateway, job_id: str, until: Callable[[str], bool], timeout_s: float
) -> dict[str, Any]:
    """Poll the job until ``until(state)`` holds; return its last view."""
    deadline = time.monotonic() + timeout_s
    state = None
    while time.monotonic() < deadline:
        status, body = http_json("GET", f"{gateway.base_url}/v1/jobs/{job_id}", gateway.user_token)
        if status != 200:
            raise RuntimeError(f"GET /v1/jobs/{job_id}: {status} {body}")
        state = str(body.get("state"))
        if until(state):
            return body
        time.sleep(JOB_POLL_INTERVAL_S)
    raise RuntimeError(f"job {job_id} still {state} after {timeout_s} s")


def stage_in_once(gateway: RunningGateway, nbytes: int) -> dict[str, Any]:
    """Run one job staging in the stored input; return its staging view once the job ended."""
    status, body = http_json("POST", f"{gateway.base_url}/v1/jobs", gateway.user_token, STAGE_IN_JOB)
    if status != 202:
        raise RuntimeError(f"POST /v1/jobs: {status} {body}")
    job_id = str(body["id"])
    try:
        view = wait_for_job(gateway, job_id, lambda state: state != STAGING_IN, STAGING_TIMEOUT_S)
        staging = view.get("staging") or {}
        if staging.get("stage_in") != "done" or staging.get("bytes_in") != nbytes:
            raise RuntimeError(f"stage-in did not finish: state {view.get('state')}, staging {staging}")
        # Let the job end before the next transfer, so that its run does not share the CPUs.
        wait_for_job(gateway, job_id, TERMINAL_STATES.__contains__, JOB_END_TIMEOUT_S)
    except RuntimeError:
        http_json("DELETE", f"{gateway.base_url}/v1/jobs/{job_id}", gateway.user_token)
        raise
    finally:
        shutil.rmtree(gateway.job_root / BENCH_TENANT / job_id, ignore_errors=True)
    return staging


def raw_download_once(gateway: RunningGateway, store: ObjectStore, blob_key: str, nbytes: int) -> float:
    """Copy the blob into a file of the job root with raw s3fs; return the seconds it took."""
    destination = gateway.job_root / f"raw-stage-in-{uuid.uuid4().hex}.bin"
    try:
        seconds, copied = get_via_s3fs(store, blob_key, destination)
    finally:
        destination.unlink(missing_ok=True)
    if copied != nbytes:
        raise RuntimeError(f"raw s3fs copied {copied} bytes, not {nbytes}")
    return seconds


def measure_stage_in(
    gateway: RunningGateway, store: ObjectStore, nbytes: int, rounds: int
) -> dict[str, object]:
    """Upload an ``nbytes`` input, then alternately stage it into a job and copy its blob raw."""
    existing = blob_keys(store)
    put_via_gateway(gateway, STAGE_IN_SOURCE, nbytes)
    (blob_key,) = blob_keys(store) - existing
    gateway.job_root.mkdir(parents=True, exist_ok=True)
    gateway_runs: list[float] = []
    raw_runs: list[float] = []
    for index in range(rounds):
        for leg in _alternating(index, "gateway", "raw"):
            if leg == "gateway":
                staging = stage_in_once(gateway, nbytes)
                gateway_runs.append(mb_per_s(nbytes, float(staging["stage_in_seconds"])))
            else:
                raw_runs.append(mb_per_s(nbytes, raw_download_once(gateway, store, blob_key, nbytes)))
    return {"input_mb": nbytes // MIB, **_comparison(gateway_runs, raw_runs)}


def measure_upload(
    gateway: RunningGateway, store: ObjectStore, nbytes: int, rounds: int
) -> dict[str, object]:
    """Alternately upload ``nbytes`` through the gateway and with raw s3fs, ``rounds`` times each."""
    gateway_runs: list[float] = []
    raw_runs: list[float] = []
    cpu_s: list[float] = []
    for index in range(rounds):
        for leg in _alternating(index, "raw", "gateway"):
            if leg == "gateway":
                cpu_before = process_cpu_s(gateway.pid)
                seconds = put_via_gateway(gateway, f"bench/upload-{index}.bin", nbytes)
                cpu_s.append(process_cpu_s(gateway.pid) - cpu_before)
                gateway_runs.append(mb_per_s(nbytes, seconds))
            else:
                raw_runs.append(mb_per_s(nbytes, put_via_s3fs(store, f"raw/upload-{index}.bin", nbytes)))
    return {
        "upload_mb": nbytes // MIB,
        **_comparison(gateway_runs, raw_runs),
        "gateway_cpu_s_per_gib": round(min(cpu_s) * GIB / nbytes, 2),
    }


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    # Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _alternating(index: int, first: str, second: str) -> tuple[str, str]:
    # Each side goes first every other round: neither always meets a warmer (or busier) store.
    return (first, second) if index % 2 == 0 else (second, first)


def _comparison(gateway_runs: list[float], raw_runs: list[float]) -> dict[str, object]:
    """Best of each side (noisy shared machine: the best run is the least disturbed) and the runs."""
    return {
        "gateway_mb_s": max(gateway_runs),
        "baseline_raw_s3fs_mb_s": max(raw_runs),
        "ratio": round(max(gateway_runs) / max(raw_runs), 3),
        "gateway_runs_mb_s": gateway_runs,
        "baseline_runs_mb_s": raw_runs,
    }


def s3_storage_from_env() -> S3Storage:
    """A fresh ``bench-<uuid>`` prefix of the test bucket (SGW_TEST_S3_* variables)."""
    try:
        endpoint = os.environ["SGW_TEST_S3_ENDPOINT"]
        key = os.environ["SGW_TEST_S3_KEY"]
        secret = os.environ["SGW_TEST_S3_SECRET"]
        bucket = os.environ["SGW_TEST_S3_BUCKET"]
    except KeyError as exc:
        raise RuntimeError(f'{exc.args[0]} is not set: eval "$(dev/test-services env)" first') from None
    return S3Storage(
        url=f"s3://{bucket}/bench-{uuid.uuid4().hex}",
        endpoint_url=endpoint,
        access_key_id=key,
        secret_access_key=secret,
    )


def main() -> None:
    """Run the storage benchmark and print its JSON result last."""
    storage = s3_storage_from_env()
    # The gateway's own s3fs settings, for baselines that differ only in the path the bytes take.
    store = ObjectStore(
        ObjectStoreSettings(
            url=storage.url,
            endpoint_url=storage.endpoint_url,
            access_key_id=storage.access_key_id,
            secret_access_key=storage.secret_access_key,
        )
    )
    job_root: Path | None = None
    try:
        with running_gateway(storage=storage) as gateway:
            job_root = gateway.job_root
            print(f"uploads of {UPLOAD_MB} MiB, {ROUNDS} rounds", flush=True)
            upload = measure_upload(gateway, store, UPLOAD_MB * MIB, ROUNDS)
            print(f"gateway upload of {MEMORY_UPLOAD_MB} MiB, sampling its RSS", flush=True)
            memory = measure_upload_memory(gateway, MEMORY_UPLOAD_MB * MIB)
            print(f"stage-in of {STAGE_IN_MB} MiB, {ROUNDS} rounds", flush=True)
            stage_in = measure_stage_in(gateway, store, STAGE_IN_MB * MIB, ROUNDS)
    finally:
        # This gateway's own job root (its jobs ended or were cancelled with it).
        if job_root is not None:
            shutil.rmtree(job_root, ignore_errors=True)
        if store.filesystem.exists(store.root):
            store.filesystem.rm(store.root, recursive=True)
    result = {"benchmark": "storage", "upload": upload, "upload_memory": memory, "stage_in": stage_in}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
