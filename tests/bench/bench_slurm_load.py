"""Slurm load: slurmctld RPCs (from sdiag) while 1 vs 500 clients poll a job through the
gateway — must not grow with the number of clients — beside slurmrestd under the same load.

Last line: JSON with RPCs per second of slurmctld for each case.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable

from tests.bench.bench_status import REST_URL, slurm_token
from tests.bench.bench_submit import JOB_SPEC, wait_for_slurm_id
from tests.bench.gateway_process import BENCH_USER, http_json, running_gateway
from tests.bench.load_generator import run_wrk

DURATION_S = 10


def slurmctld_rpc_total() -> int:
    """Total RPCs slurmctld has served, by message type (sdiag)."""
    out = subprocess.run(["sdiag"], check=True, capture_output=True, text=True).stdout
    section = out.split("Remote Procedure Call statistics by message type", 1)[1]
    section = section.split("Remote Procedure Call statistics by user", 1)[0]
    return sum(int(count) for count in re.findall(r"count:(\d+)", section))


def rpc_rate_during(load: Callable[[], object]) -> float:
    """slurmctld RPCs per second while ``load()`` runs."""
    before = slurmctld_rpc_total()
    start = time.monotonic()
    load()
    return round((slurmctld_rpc_total() - before) / (time.monotonic() - start), 2)


def main() -> None:
    """Run the Slurm-load benchmark and print its JSON result last."""
    with running_gateway() as gateway:
        spec = {**JOB_SPEC, "command": ["sleep", "600"], "name": "bench-load"}
        _, body = http_json("POST", f"{gateway.base_url}/v1/jobs", gateway.user_token, spec)
        job_id = str(body["id"])
        wait_for_slurm_id(gateway, job_id)
        _, job = http_json("GET", f"{gateway.base_url}/v1/jobs/{job_id}", gateway.user_token)
        url = f"{gateway.base_url}/v1/jobs/{job_id}"
        auth = {"Authorization": f"Bearer {gateway.user_token}"}
        idle = rpc_rate_during(lambda: time.sleep(DURATION_S))
        one = rpc_rate_during(lambda: run_wrk(url, auth, connections=1, duration_s=DURATION_S))
        many = rpc_rate_during(lambda: run_wrk(url, auth, connections=500, duration_s=DURATION_S))
        rest_url = f"{REST_URL}/slurm/v0.0.38/job/{job['slurm_job_id']}"
        rest_auth = {"X-SLURM-USER-NAME": BENCH_USER, "X-SLURM-USER-TOKEN": slurm_token(BENCH_USER)}
        rest_one = rpc_rate_during(lambda: run_wrk(rest_url, rest_auth, connections=1, duration_s=DURATION_S))
        rest_many = rpc_rate_during(
            lambda: run_wrk(rest_url, rest_auth, connections=500, duration_s=DURATION_S)
        )
        http_json("DELETE", url, gateway.user_token)

    print(
        json.dumps(
            {
                "benchmark": "slurm_load",
                "slurmctld_rpc_per_s": {
                    "gateway_idle": idle,
                    "gateway_1_client": one,
                    "gateway_500_clients": many,
                    "baseline_slurmrestd_1_client": rest_one,
                    "baseline_slurmrestd_500_clients": rest_many,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
