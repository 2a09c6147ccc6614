"""SlurmDriver over slurmrestd (JWT auth): jobs are submitted with a token for their Unix user.

The wire format lives in ``slurm.rest_v0038``; this module does the I/O: HTTP through urllib,
tokens from ``slurm.slurm_tokens``, and the working directory the job needs before it exists.
Reads (poll, find_submitted, partitions) and cancel use one privileged identity (root by
default), which sees every job; submissions use the job's own user, so Slurm runs the job as
that user and enforces that user's associations.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.request import ProxyHandler, Request, build_opener

from slurm import rest_v0038
from slurm.batch_job import BatchJob
from slurm.batch_script import render_batch_script
from slurm.errors import SlurmOutputError, SlurmUnavailable
from slurm.observations import JobObservation, PartitionCapacity
from slurm.partition_fabrics import PartitionFabrics
from slurm.slurm_tokens import SlurmTokenMinter
from slurm.working_dirs import prepare_working_dir

# find_submitted looks this far back in slurmdbd for jobs that already left slurmctld.
DEFAULT_FIND_WINDOW_S = 7 * 24 * 3600
# The ids the gateway passes: a job ("123") or an array task ("123_4").
_JOB_ID = re.compile(r"[0-9]+(_[0-9]+)?", re.ASCII)
# Keeps the slurmdbd query string of one poll well under URL length limits.
_DB_QUERY_CHUNK = 500
_MAX_BODY_QUOTE_CHARS = 120


class RestSlurmDriver:
    """SlurmDriver backed by slurmrestd's v0.0.38 API."""

    def __init__(
        self,
        base_url: str,
        key_path: Path | str,
        *,
        timeout_s: float,
        privileged_user: str = "root",
        find_window_s: int = DEFAULT_FIND_WINDOW_S,
        tokens: SlurmTokenMinter | None = None,
        fabrics: PartitionFabrics | None = None,
    ) -> None:
        """``base_url`` e.g. http://127.0.0.1:6820; ``key_path`` the cluster's HS256 JWT key;
        ``fabrics`` gives each job its partition's fabric settings."""
        self._fabrics = fabrics
        self._base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._privileged_user = privileged_user
        self._find_window_s = find_window_s
        self._tokens = tokens if tokens is not None else SlurmTokenMinter(Path(key_path))
        # No proxies: slurmrestd is a local service and tokens must not travel elsewhere.
        self._opener = build_opener(ProxyHandler({}))

    def estimate_start(self, job: BatchJob) -> int | None:
        """None: slurmrestd 22.05 has no equivalent of ``sbatch --test-only``.

        Its job listing estimates only jobs already queued, not a shape that was never submitted.
        """
        return None

    def submit(self, job: BatchJob) -> str:
        """Submit ``job`` as its Unix user; return the Slurm job id.

        Raises JobSpecError for unsafe values, SlurmRejected when Slurm refuses the job (bad
        account, partition, QOS, ...), SlurmUnavailable when slurmrestd cannot be reached.
        """
        if self._fabrics is not None:
            job = self._fabrics.apply(job)
        body = rest_v0038.submission_body(job, render_batch_script(job))
        prepare_working_dir(job)
        status, answer = self._request("POST", rest_v0038.SUBMIT_PATH, job.unix_user, body)
        return rest_v0038.submitted_job_id(status, answer)

    def poll(self, slurm_job_ids: Sequence[str]) -> dict[str, JobObservation]:
        """Observe these jobs: slurmctld's listing first, slurmdbd for those it no longer holds.

        Keys as the CLI driver's: the requested ids plus, for an array, each task ("123_4"),
        with every task in the array's ``array_tasks``. slurmctld keeps an ended job for
        MinJobAge with its final exit code and full node list, so a terminal observation from
        it is final. It forgets an array's ended tasks one by one while others still run, so
        arrays are also looked up in slurmdbd, whose record counts only for tasks slurmctld no
        longer shows (its exit codes are less reliable, see ``slurm.rest_v0038``).
        """
        wanted = _checked_job_ids(slurm_job_ids)
        if not wanted:
            return {}
        live = [
            (rest_v0038.live_keys(r), rest_v0038.live_observation(r))
            for r in self._listing(rest_v0038.JOBS_PATH, "jobs", "list jobs")
        ]
        found = rest_v0038.observations_for(wanted, live)
        unsettled = [job_id for job_id in wanted if job_id not in found or found[job_id].array_tasks]
        if not unsettled:
            return found
        # Later pairs win: slurmctld's view of a task it still holds over slurmdbd's.
        return rest_v0038.observations_for(wanted, [*self._recorded(unsettled), *live])

    def find_submitted(self, gateway_job_ids: Sequence[str]) -> dict[str, str]:
        """Slurm ids (array ids for arrays) of jobs whose comment is ``sgw:<gateway id>``.

        Looks at slurmctld's jobs and slurmdbd's of the last ``find_window_s``; if one gateway
        id was submitted more than once, the most recently submitted job wins (as the CLI driver).
        """
        wanted = set(gateway_job_ids)
        if not wanted:
            return {}
        live = self._listing(rest_v0038.JOBS_PATH, "jobs", "list jobs")
        candidates = [(rest_v0038.live_keys(r), rest_v0038.live_observation(r)) for r in live]
        candidates += self._recorded_submissions()
        return _newest_submissions(wanted, candidates)

    def _recorded(self, slurm_job_ids: Sequence[str]) -> list[tuple[list[str], JobObservation]]:
        """slurmdbd's records of these jobs (and their arrays' tasks), with their Slurm ids."""
        pairs: list[tuple[list[str], JobObservation]] = []
        for start in range(0, len(slurm_job_ids), _DB_QUERY_CHUNK):
            chunk = slurm_job_ids[start : start + _DB_QUERY_CHUNK]
            records = self._listing(rest_v0038.db_jobs_path(chunk), "jobs", "read job accounting")
            pairs += [(rest_v0038.accounting_keys(r), rest_v0038.accounting_observation(r)) for r in records]
        return pairs

    def _recorded_submissions(self) -> list[tuple[list[str], JobObservation]]:
        """slurmdbd's jobs submitted in the last ``find_window_s``, with their Slurm ids."""
        since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - self._find_window_s))
        records = self._listing(rest_v0038.db_jobs_submitted_since_path(since), "jobs", "read job accounting")
        return [(rest_v0038.accounting_keys(r), rest_v0038.accounting_observation(r)) for r in records]

    def cancel(self, slurm_job_id: str) -> None:
        """Cancel the job; unknown or already ended jobs are not an error."""
        (job_id,) = _checked_job_ids([slurm_job_id])
        path = rest_v0038.job_path(job_id)
        rest_v0038.check_cancelled(*self._request("DELETE", path, self._privileged_user))

    def partitions(self) -> list[PartitionCapacity]:
        """Capacity of every partition, with pending job counts."""
        return rest_v0038.partition_capacities(
            self._listing(rest_v0038.PARTITIONS_PATH, "partitions", "list partitions"),
            self._listing(rest_v0038.NODES_PATH, "nodes", "list nodes"),
            self._listing(rest_v0038.JOBS_PATH, "jobs", "list jobs"),
        )

    def _listing(self, path: str, key: str, what: str) -> list[Mapping[str, Any]]:
        status, answer = self._request("GET", path, self._privileged_user)
        return rest_v0038.checked_listing(status, answer, key, what)

    def _request(
        self, method: str, path: str, user: str, body: object = None
    ) -> tuple[int, Mapping[str, Any]]:
        """Send one request as ``user``; return the HTTP status and the decoded JSON answer."""
        headers = {"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": self._tokens.token_for(user)}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = Request(self._base_url + path, data=data, method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=self._timeout_s) as response:
                status, raw = response.status, response.read()
        except HTTPError as exc:
            # slurmrestd reports Slurm's refusals as HTTP 500 with a JSON body: keep reading it.
            status, raw = exc.code, exc.read()
        except TimeoutError as exc:
            raise SlurmUnavailable(
                f"slurmrestd {method} {_route(path)}: timed out after {self._timeout_s:g}s"
            ) from exc
        except (URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SlurmUnavailable(f"slurmrestd {method} {_route(path)}: {reason}") from exc
        return status, _decode(status, raw, method, path)


def _decode(status: int, raw: bytes, method: str, path: str) -> Mapping[str, Any]:
    try:
        answer = json.loads(raw)
    except ValueError as exc:
        # 401/404/400 answers are plain text ("Authentication failure", "Unable to parse query.").
        text = " ".join(raw.decode(errors="replace").split())[:_MAX_BODY_QUOTE_CHARS]
        error = SlurmUnavailable if status != 200 else SlurmOutputError
        raise error(f"slurmrestd {method} {_route(path)}: HTTP {status} {text!r}") from exc
    if not isinstance(answer, Mapping):
        raise SlurmOutputError(f"slurmrestd {method} {_route(path)}: answer is not a JSON object")
    return answer


def _route(path: str) -> str:
    return path.split("?", 1)[0]


def _checked_job_ids(job_ids: Iterable[str]) -> list[str]:
    checked = list(dict.fromkeys(job_ids))
    for job_id in checked:
        if not _JOB_ID.fullmatch(job_id):
            raise ValueError(f"not a Slurm job id: {job_id[:30]!r}")
    return checked


def _newest_submissions(
    wanted: set[str], candidates: Iterable[tuple[list[str], JobObservation]]
) -> dict[str, str]:
    newest: dict[str, tuple[int, int, str]] = {}
    for keys, observation in candidates:
        gateway_id = observation.gateway_job_id
        if gateway_id not in wanted or not keys:
            continue
        array_or_job_id = keys[0].partition("_")[0]
        candidate = (observation.submit_time or 0, int(array_or_job_id), array_or_job_id)
        if gateway_id not in newest or candidate > newest[gateway_id]:
            newest[gateway_id] = candidate
    return {gateway_id: slurm_id for gateway_id, (_, _, slurm_id) in newest.items()}
