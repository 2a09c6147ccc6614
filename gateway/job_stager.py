"""Stage-in and stage-out: the gateway's own work on a job before and after Slurm runs it.

- ``staging_in`` jobs: each input (a stored file, or an object under the tenant's S3 prefixes) is
  copied into the job's working directory as the job's user and checked against its sha256;
  then the job becomes ``accepted`` and the submitter takes it. Slurm never sees a job whose
  inputs are not all there: the gateway holds it, so no Slurm hold/release round trip is needed
  (a held job gains no queue priority anyway: Slurm's age factor counts from eligibility).
- ``staging_out`` jobs (Slurm reported COMPLETED): the files of the completed attempt's
  ``$SGW_OUTPUT_DIR`` that match the spec's ``outputs`` are uploaded, each checked against the
  digest the job's own manifest recorded on the compute node, and all of them become the
  tenant's files under ``jobs/<job id>/`` in ONE transaction that also marks the job
  ``completed``. A failed, cancelled or crashed stage-out publishes nothing, and a re-run of the
  job replaces the whole set (files the new run did not produce go too): never partial or
  mixed outputs.

Transfers of all claimed jobs share one pool of ``transfer_concurrency`` threads and each
tenant's token bucket (staging.transfer_limits), so one tenant's large job cannot starve
another's; each reads a few chunks ahead (staging.read_ahead) so reading and writing overlap.
A job's staging row carries a lease (several gateway processes, crashes); storage outages are
retried with backoff, anything else fails the job with a clear reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from gateway.domain_errors import QuotaExceeded
from gateway.job_admission import job_working_dir
from gateway.job_states import ACCEPTED, COMPLETED, FAILED, STAGING_IN, STAGING_OUT
from gateway.storage_models import Job, JobStaging, StoredFile
from gateway.storage_quota import charge_stored_bytes, release_reservation_now, reserve_storage
from gateway.stored_files import NewFile, commit_stored_files
from gateway.timestamps import Clock, utc_now
from slurm.errors import JobSpecError, SlurmUnavailable
from slurm.job_layout import DEFAULT_STEP_NAME
from slurm.working_dirs import prepare_directory
from staging.object_store import ObjectStore
from staging.output_checkpoints import OutputFile
from staging.read_ahead import read_ahead
from staging.stage_in import StageInRefused, write_into_working_dir
from staging.stage_out import StageOutRefused, read_output_chunks, select_outputs
from staging.storage_errors import DigestMismatch, ObjectMissing, SizeLimitExceeded, StorageUnavailable
from staging.transfer_limits import TenantBandwidth, throttled

logger = logging.getLogger(__name__)

# Staging row states (JobStaging.stage_in / stage_out).
WAITING = "waiting"
PENDING = "pending"
RUNNING = "running"
DONE = "done"
FAILED_STAGE = "failed"
# Jobs claimed per cycle; their files are what the transfer pool works through.
CLAIM_BATCH = 16
# Held by the lease while a storage outage waits out its backoff (no process owns it).
BACKOFF_OWNER = "backoff"
MAX_BACKOFF_S = 60.0


class StagerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What the stager needs from the configuration."""

    worker_id: str
    job_root: str
    concurrency: int = 4
    tenant_bandwidth_bytes_s: int | None = None
    max_file_bytes: int = 1024**4
    # A worker that has not finished a job's staging in this long is presumed dead.
    lease_s: float = 3600.0


class StageFailed(Exception):
    """Staging cannot succeed as asked; ``message`` is the job's reason, for its user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Claim(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    direction: str  # "in" or "out"
    tenant_id: str
    unix_user: str
    working_dir: str
    step_name: str
    attempt: int
    # Where a step's or job's outputs go in the tenant's namespace, with a trailing "/".
    output_prefix: str
    spec: dict[str, Any]
    outputs: list[Any] | None
    retries: int


class _Started(msgspec.Struct, frozen=True, kw_only=True):
    """A claim's transfers, queued on the pool, and the quota reservation a stage-out holds."""

    futures: list[Future[Any]]
    reservation: str | None = None


class JobStager:
    """Claims staging work, runs the transfers, and records the outcome."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: ObjectStore,
        settings: StagerSettings,
        *,
        clock: Clock = utc_now,
        on_jobs_changed: Callable[[Sequence[str]], None] | None = None,
        on_staged_in: Callable[[], None] | None = None,
    ) -> None:
        """``on_staged_in`` hears that jobs became ``accepted`` (to wake the submitter)."""
        self._session_factory = session_factory
        self._store = store
        self._settings = settings
        self._clock = clock
        self._on_jobs_changed = on_jobs_changed
        self._on_staged_in = on_staged_in
        self._bandwidth = TenantBandwidth(settings.tenant_bandwidth_bytes_s)
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="stage-transfer")
        self._failures: dict[str, int] = {}

    def close(self) -> None:
        """Stop the transfer threads (after the loop that calls run_once stopped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def run_once(self) -> int:
        """One cycle: claim, transfer, record; returns how many jobs it handled."""
        claims = self._claim()
        running = [(claim, self._start(claim)) for claim in claims]
        changed: list[str] = []
        staged_in = False
        for claim, started in running:
            if self._finish_safely(claim, started):
                changed.append(claim.job_id)
                staged_in = staged_in or claim.direction == "in"
        if changed and self._on_jobs_changed is not None:
            self._on_jobs_changed(changed)
        if staged_in and self._on_staged_in is not None:
            self._on_staged_in()
        return len(claims)

    # --- claiming -------------------------------------------------------------------------

    def _claim(self) -> list[_Claim]:
        now = self._clock()
        lease_free = or_(JobStaging.lease_owner.is_(None), JobStaging.lease_expires_at < now)
        wanted = or_(
            and_(Job.state == STAGING_IN, JobStaging.stage_in.in_((PENDING, RUNNING))),
            and_(Job.state == STAGING_OUT, JobStaging.stage_out.in_((PENDING, RUNNING))),
        )
        claims = []
        with self._session_factory() as session:
            rows = session.execute(
                select(Job, JobStaging)
                .join(JobStaging, JobStaging.job_id == Job.id)
                .where(wanted, lease_free)
                .order_by(Job.updated_at)
                .limit(CLAIM_BATCH)
            ).all()
            for job, staging in rows:
                direction = "in" if job.state == STAGING_IN else "out"
                started = (
                    {f"stage_{direction}_started_at": now}
                    if getattr(staging, f"stage_{direction}") == PENDING
                    else {}
                )
                taken = session.execute(
                    update(JobStaging)
                    .where(JobStaging.job_id == job.id, lease_free)
                    # The rows are in this session: evaluating the lease in Python would compare
                    # SQLite's naive datetimes with an aware one. The database decides.
                    .execution_options(synchronize_session=False)
                    .values(
                        lease_owner=self._settings.worker_id,
                        lease_expires_at=now + timedelta(seconds=self._settings.lease_s),
                        **{f"stage_{direction}": RUNNING},
                        **started,
                        updated_at=now,
                    )
                ).rowcount
                if taken:
                    claims.append(self._claim_of(job, direction))
            session.commit()
        return claims

    def _claim_of(self, job: Job, direction: str) -> _Claim:
        workdir_owner = job.parent_id or job.id
        step = job.step_name or DEFAULT_STEP_NAME
        output_prefix = f"jobs/{workdir_owner}/{job.step_name}/" if job.parent_id else f"jobs/{job.id}/"
        return _Claim(
            job_id=job.id,
            direction=direction,
            tenant_id=job.tenant_id,
            unix_user=job.unix_user,
            working_dir=job_working_dir(self._settings.job_root, job.tenant_id, workdir_owner),
            step_name=step,
            attempt=job.attempt,
            output_prefix=output_prefix,
            spec=job.spec,
            outputs=job.outputs,
            retries=self._failures.get(job.id, 0),
        )

    # --- transfers ------------------------------------------------------------------------

    def _start(self, claim: _Claim) -> _Started | StageFailed | StorageUnavailable:
        """Queue the claim's transfers on the pool (or the reason it cannot start)."""
        try:
            if claim.direction == "in":
                return self._start_stage_in(claim)
            return self._start_stage_out(claim)
        except (StageFailed, StorageUnavailable) as exc:
            return exc

    def _start_stage_in(self, claim: _Claim) -> _Started:
        try:
            account = prepare_directory(claim.working_dir, claim.unix_user)
        except JobSpecError as exc:
            raise StageFailed(exc.message) from exc
        except SlurmUnavailable as exc:
            raise StorageUnavailable(str(exc)) from exc
        bucket = self._bandwidth.bucket(claim.tenant_id)
        futures = []
        for item in claim.spec.get("inputs") or []:
            source = item["source"]
            chunks, expected = self._input_source(claim, source, item.get("sha256"))
            futures.append(
                self._pool.submit(
                    _stage_one_input,
                    throttled(read_ahead(chunks), bucket),
                    claim.working_dir,
                    item["path"],
                    source,
                    uid=account.pw_uid,
                    gid=account.pw_gid,
                    expected_sha256=expected,
                    max_bytes=self._settings.max_file_bytes,
                )
            )
        return _Started(futures=futures)

    def _input_source(
        self, claim: _Claim, source: str, wanted: str | None
    ) -> tuple[Iterator[bytes], str | None]:
        if source.startswith("s3://"):
            return self._store.read_url_chunks(source), wanted
        with self._session_factory() as session:
            stored = session.get(StoredFile, (claim.tenant_id, source))
            if stored is None:
                raise StageFailed(f"input {source!r} no longer exists in your namespace")
            blob_key, recorded = stored.blob_key, stored.sha256
        if wanted is not None and wanted != recorded:
            raise StageFailed(f"input {source!r} has sha256 {recorded}, not the {wanted} the job asked for")
        return self._store.read_chunks(blob_key), recorded

    def _start_stage_out(self, claim: _Claim) -> _Started:
        if claim.outputs is None:
            raise StageFailed("the completed attempt's outputs were not recorded, so none could be uploaded")
        files = [msgspec.convert(item, OutputFile) for item in claim.outputs]
        selected = select_outputs(files, claim.spec.get("outputs") or [])
        if selected.unmatched:
            listed = ", ".join(f"`{pattern}`" for pattern in selected.unmatched)
            raise StageFailed(f"outputs {listed} matched no file the job wrote to $SGW_OUTPUT_DIR")
        too_big = [item.path for item in selected.files if item.size > self._settings.max_file_bytes]
        if too_big:
            raise StageFailed(
                f"{too_big[0]} is larger than the {self._settings.max_file_bytes}-byte file limit"
            )
        total = sum(item.size for item in selected.files)
        try:
            reservation = reserve_storage(
                self._session_factory, claim.tenant_id, total, blob_key=None, ttl_s=self._settings.lease_s
            )
        except QuotaExceeded as exc:
            raise StageFailed(f"{exc}; the outputs stay in the job's working directory") from exc
        bucket = self._bandwidth.bucket(claim.tenant_id)
        futures = []
        for item in selected.files:
            # A fresh key per try: a worker whose lease ran out may still be writing its own, and
            # whichever commits second must never delete the first's committed blobs.
            key = self._store.new_blob_key(claim.tenant_id)
            futures.append(
                self._pool.submit(
                    _stage_one_output,
                    self._store,
                    key,
                    throttled(
                        read_ahead(
                            read_output_chunks(claim.working_dir, claim.step_name, claim.attempt, item)
                        ),
                        bucket,
                    ),
                    item,
                )
            )
        return _Started(futures=futures, reservation=reservation)

    # --- recording ------------------------------------------------------------------------

    def _finish_safely(self, claim: _Claim, started: _Started | StageFailed | StorageUnavailable) -> bool:
        """``_finish``, but an unexpected error (the database, a racing write) backs this claim
        off instead of ending the cycle for every other claim in it."""
        try:
            return self._finish(claim, started)
        except Exception:
            logger.exception(
                "job %s: recording stage-%s failed; trying again later", claim.job_id, claim.direction
            )
            if isinstance(started, _Started):
                self._discard([], started.reservation)
            return self._back_off(claim, "the gateway could not record the transfer")

    def _finish(self, claim: _Claim, started: _Started | StageFailed | StorageUnavailable) -> bool:
        if isinstance(started, StageFailed):
            return self._record_failure(claim, started.message, blobs=[], reservation=None)
        if isinstance(started, StorageUnavailable):
            return self._back_off(claim, str(started))
        reservation = started.reservation
        results = []
        problem: Exception | None = None
        for future in started.futures:
            try:
                results.append(future.result())
            except Exception as exc:  # every transfer ends before deciding, so no blob is left
                problem = problem or exc
        blobs = [result[0] for result in results] if claim.direction == "out" else []
        if problem is None:
            return self._record_success(claim, results, reservation)
        if isinstance(problem, StorageUnavailable):
            self._discard(blobs, reservation)
            return self._back_off(claim, str(problem))
        return self._record_failure(claim, _failure_message(problem), blobs=blobs, reservation=reservation)

    def _record_success(self, claim: _Claim, results: list[Any], reservation: str | None) -> bool:
        now = self._clock()
        self._failures.pop(claim.job_id, None)
        with self._session_factory() as session:
            if claim.direction == "in":
                staged = [msgspec.to_builtins(result) for result in results]
                moved = self._move_job(session, claim, STAGING_IN, ACCEPTED, reason=None, now=now)
                self._set_staging(
                    session,
                    claim,
                    now,
                    stage_in=DONE,
                    staged_in=staged,
                    bytes_in=sum(item["size"] for item in staged),
                    stage_in_ended_at=now,
                    error=None,
                )
                session.commit()
                return moved
            new_files = [
                NewFile(
                    tenant_id=claim.tenant_id,
                    path=claim.output_prefix + output.path,
                    blob_key=key,
                    size=output.size,
                    sha256=output.sha256,
                    created_by=claim.unix_user,
                    job_id=claim.job_id,
                )
                for key, output in results
            ]
            if not self._move_job(
                session, claim, STAGING_OUT, COMPLETED, reason=None, now=now, keep_ended=True
            ):
                # Cancelled (or otherwise moved on) meanwhile: keep nothing.
                session.rollback()
                self._discard([file.blob_key for file in new_files], reservation)
                return False
            garbage = commit_stored_files(session, new_files, reservation_id=reservation, now=now)
            garbage += _drop_stale_outputs(session, claim, {file.path for file in new_files})
            self._set_staging(
                session,
                claim,
                now,
                stage_out=DONE,
                staged_out=[
                    {"path": file.path, "sha256": file.sha256, "size": file.size} for file in new_files
                ],
                bytes_out=sum(file.size for file in new_files),
                stage_out_ended_at=now,
                error=None,
            )
            session.commit()
        for key in garbage:
            self._store.delete(key, quiet=True)
        return True

    def _record_failure(
        self, claim: _Claim, message: str, *, blobs: list[str], reservation: str | None
    ) -> bool:
        self._discard(blobs, reservation)
        self._failures.pop(claim.job_id, None)
        now = self._clock()
        reason = f"stage-{claim.direction} failed: {message}"
        logger.info("job %s: %s", claim.job_id, reason)
        source = STAGING_IN if claim.direction == "in" else STAGING_OUT
        with self._session_factory() as session:
            moved = self._move_job(
                session, claim, source, FAILED, reason=reason, now=now, keep_ended=claim.direction == "out"
            )
            self._set_staging(
                session,
                claim,
                now,
                error=message,
                **{f"stage_{claim.direction}": FAILED_STAGE, f"stage_{claim.direction}_ended_at": now},
            )
            session.commit()
        return moved

    def _back_off(self, claim: _Claim, message: str) -> bool:
        """Storage is down: try again later (the lease, held by nobody, is the not-before time)."""
        retries = self._failures[claim.job_id] = claim.retries + 1
        delay = min(MAX_BACKOFF_S, 2.0**retries)
        logger.warning(
            "job %s: stage-%s waits %.0f s for storage: %s", claim.job_id, claim.direction, delay, message
        )
        now = self._clock()
        with self._session_factory() as session:
            self._set_staging(
                session,
                claim,
                now,
                error=f"waiting for object storage: {message}",
                lease_owner=BACKOFF_OWNER,
                lease_expires_at=now + timedelta(seconds=delay),
            )
            session.commit()
        return False

    def _move_job(
        self,
        session: Session,
        claim: _Claim,
        source: str,
        target: str,
        *,
        reason: str | None,
        now: datetime,
        keep_ended: bool = False,
    ) -> bool:
        values: dict[str, Any] = {"state": target, "state_reason": reason, "updated_at": now}
        if target == FAILED and not keep_ended:
            values["ended_at"] = now
        return bool(
            session.execute(
                update(Job)
                .where(Job.id == claim.job_id, Job.state == source, Job.attempt == claim.attempt)
                .values(**values)
            ).rowcount
        )

    def _set_staging(self, session: Session, claim: _Claim, now: datetime, **values: Any) -> None:
        values.setdefault("lease_owner", None)
        values.setdefault("lease_expires_at", None)
        session.execute(
            update(JobStaging).where(JobStaging.job_id == claim.job_id).values(**values, updated_at=now)
        )

    def _discard(self, blobs: Sequence[str], reservation: str | None) -> None:
        for key in blobs:
            self._store.delete(key, quiet=True)
        if reservation is not None:
            release_reservation_now(self._session_factory, reservation)


def _stage_one_input(
    chunks: Iterator[bytes],
    working_dir: str,
    path: str,
    source: str,
    *,
    uid: int,
    gid: int,
    expected_sha256: str | None,
    max_bytes: int,
) -> dict[str, Any]:
    staged = write_into_working_dir(
        chunks, working_dir, path, uid=uid, gid=gid, expected_sha256=expected_sha256, max_bytes=max_bytes
    )
    return {"path": staged.path, "sha256": staged.sha256, "size": staged.size, "source": source}


def _stage_one_output(
    store: ObjectStore, key: str, chunks: Iterator[bytes], output: OutputFile
) -> tuple[str, OutputFile]:
    with store.writer(key, max_bytes=output.size, expected_sha256=output.sha256) as writer:
        for chunk in chunks:
            writer.write(chunk)
        writer.finish()
    return key, output


def _drop_stale_outputs(session: Session, claim: _Claim, kept: set[str]) -> list[str]:
    """Remove the files an earlier run of this job or step staged out that this run did not
    produce, crediting their bytes; returns their blob keys."""
    dropped = session.execute(
        delete(StoredFile)
        .where(
            StoredFile.tenant_id == claim.tenant_id,
            StoredFile.job_id == claim.job_id,
            StoredFile.path.not_in(kept),
        )
        .returning(StoredFile.size, StoredFile.blob_key)
        .execution_options(synchronize_session=False)
    ).all()
    if dropped:
        charge_stored_bytes(session, claim.tenant_id, -sum(size for size, _ in dropped))
    return [blob_key for _, blob_key in dropped]


def _failure_message(exc: Exception) -> str:
    if isinstance(exc, (StageInRefused, StageOutRefused)):
        return exc.message
    if isinstance(exc, DigestMismatch):
        return f"the bytes do not match their sha256 (expected {exc.expected}, got {exc.actual})"
    if isinstance(exc, SizeLimitExceeded):
        return f"a file is larger than allowed ({exc.limit} bytes)"
    if isinstance(exc, ObjectMissing):
        return "an input's bytes are missing from object storage"
    if isinstance(exc, JobSpecError):
        return exc.message
    logger.exception("unexpected staging failure", exc_info=exc)
    return "an unexpected error stopped the transfer"
