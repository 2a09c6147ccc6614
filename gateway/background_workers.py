"""Start and stop the background loops with the app (a Litestar lifespan): the submitter, the
reconciler, the stager (stage-in and stage-out), the storage janitor (expired uploads and
quota reservations) and, with ``accounting.enabled``, the accounting reconciler (sacct into the
cost ledger, then the Slurm budget backstop; one process at a time, under a leader lease).

Each loop is a daemon thread: the Slurm drivers are blocking subprocess calls, and a thread per
loop keeps them off the event loop without tying up the request thread pool. The lifespan also
puts the Slurm driver (``app.state.slurm_driver``), the shared partition capacity cache
(``app.state.partition_capacity``) and the loops (``app.state.job_workers``, None when
``workers.enabled`` is false) on the app state.

Test hook: SLURM_GATEWAY_TEST_PAUSE_AFTER_SUBMIT_S (seconds, default 0) makes the submitter
sleep between sbatch and recording the Slurm id, so crash tests can kill the process there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from litestar import Litestar
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from accounting.budget_backstop import sync_budget_backstop
from accounting.leader_lease import ACCOUNTING_LEASE, release_lease, try_acquire_lease
from accounting.usage_reconciler import reconcile_usage
from gateway.config import ConfigError, GatewayConfig
from gateway.job_reconciler import JobReconciler
from gateway.job_stager import JobStager, StagerSettings
from gateway.job_submitter import JobSubmitter, SubmitterSettings
from gateway.metrics import MetricsRegistry
from gateway.partition_capacity import PartitionCapacityCache
from gateway.slurm_driver import slurm_driver_from_config
from gateway.storage_sweeper import sweep_storage
from gateway.upload_service import expire_uploads
from slurm.command_runner import SubprocessCommandRunner
from slurm.driver import SlurmDriver
from slurm.errors import SlurmUnavailable
from staging.object_store import ObjectStore

logger = logging.getLogger(__name__)

ENV_TEST_PAUSE_AFTER_SUBMIT = "SLURM_GATEWAY_TEST_PAUSE_AFTER_SUBMIT_S"
# How long shutdown waits for a loop to finish its current step (an sbatch in flight).
STOP_TIMEOUT_S = 30.0
# Expired uploads and reservations are found this often (they expire after hours, not seconds).
JANITOR_INTERVAL_S = 60.0
# sacct over a busy month (100k records) takes far longer than an sbatch: its own, longer timeout.
ACCOUNTING_COMMAND_TIMEOUT_S = 300.0


class WorkerLoop:
    """Runs ``step`` repeatedly in a thread: again at once when it reports more work, after
    ``interval_s`` when idle, and with exponential backoff (up to ``max_backoff_s``) on errors.
    """

    def __init__(
        self, name: str, step: Callable[[], bool], *, interval_s: float, max_backoff_s: float
    ) -> None:
        """``step`` returns True when it left work behind (e.g. claimed a full batch)."""
        self._name = name
        self._step = step
        self._interval_s = interval_s
        self._max_backoff_s = max_backoff_s
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def wake(self) -> None:
        """Run the next step now instead of after the interval (e.g. a job was just accepted)."""
        self._wake.set()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Ask the loop to end and wait for its current step to finish."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.warning("%s did not stop within %.0f s", self._name, timeout_s)

    def _run(self) -> None:
        delay = 0.0
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            if self._stopping:
                return
            try:
                more = self._step()
            except SlurmUnavailable as exc:
                delay = self._backoff(delay)
                logger.warning("%s: Slurm unavailable, next try in %.1f s: %s", self._name, delay, exc)
                continue
            except Exception:
                delay = self._backoff(delay)
                logger.exception("%s: step failed, next try in %.1f s", self._name, delay)
                continue
            delay = 0.0 if more else self._interval_s

    def _backoff(self, delay: float) -> float:
        return min(self._max_backoff_s, max(self._interval_s, delay * 2))


class JobWorkers:
    """The background loops of one gateway process."""

    def __init__(
        self,
        *,
        submitter: WorkerLoop,
        reconciler: WorkerLoop,
        stager: WorkerLoop,
        janitor: WorkerLoop,
        accounting: WorkerLoop | None = None,
        on_stop: Callable[[], None],
    ) -> None:
        """Wrap the loops (not started yet; ``accounting`` None: off); ``on_stop`` runs once they
        all stopped."""
        self.submitter = submitter
        self.reconciler = reconciler
        self.stager = stager
        self.janitor = janitor
        self.accounting = accounting
        self._on_stop = on_stop

    def start(self) -> None:
        """Start the loops."""
        for loop in self._loops((self.submitter, self.reconciler, self.stager, self.janitor)):
            loop.start()

    def stop(self) -> None:
        """Stop the loops, waiting for steps in flight."""
        for loop in self._loops((self.stager, self.janitor, self.submitter, self.reconciler)):
            loop.stop()
        self._on_stop()

    def _loops(self, job_loops: tuple[WorkerLoop, ...]) -> list[WorkerLoop]:
        return [*job_loops, *([self.accounting] if self.accounting is not None else [])]


def background_workers_lifespan(
    config: GatewayConfig,
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """A lifespan that needs ``app.state.session_factory`` (and ``metrics`` when present) set."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        driver = slurm_driver_from_config(config.slurm)
        app.state.slurm_driver = driver
        app.state.partition_capacity = PartitionCapacityCache(driver)
        workers = None
        if config.workers.enabled:
            workers = build_job_workers(
                config,
                app.state.session_factory,
                driver,
                app.state.object_store,
                getattr(app.state, "metrics", None),
                on_jobs_changed=_view_cache_invalidator(app, asyncio.get_running_loop()),
            )
            workers.start()
        app.state.job_workers = workers
        try:
            yield
        finally:
            if workers is not None:
                await asyncio.to_thread(workers.stop)

    return lifespan


def build_job_workers(
    config: GatewayConfig,
    session_factory: sessionmaker[Session],
    driver: SlurmDriver,
    store: ObjectStore,
    metrics: MetricsRegistry | None,
    *,
    on_jobs_changed: Callable[[Sequence[str]], None] | None = None,
) -> JobWorkers:
    """The background loops for ``config`` (not started); ``on_jobs_changed`` hears, from the
    submitter's and the stager's threads, of every job whose state they committed."""
    settings = config.workers
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    submitter = JobSubmitter(
        session_factory,
        driver,
        SubmitterSettings(
            worker_id=worker_id,
            lease_s=settings.submit_lease_s,
            max_backoff_s=settings.max_backoff_s,
            job_root=config.slurm.job_root,
            concurrency=settings.submit_concurrency,
            pause_after_submit_s=_test_pause_after_submit(),
        ),
        metrics=metrics,
        on_jobs_changed=on_jobs_changed,
    )
    reconciler = JobReconciler(session_factory, driver, job_root=config.slurm.job_root, metrics=metrics)

    def submit_step() -> bool:
        # Something moved: there may be more (a full batch, or jobs accepted meanwhile).
        return submitter.run_once().handled > 0

    def reconcile_step() -> bool:
        reconciler.run_once()
        return False

    submitter_loop = WorkerLoop(
        "job-submitter",
        submit_step,
        interval_s=settings.submit_interval_s,
        max_backoff_s=settings.max_backoff_s,
    )
    stager = JobStager(
        session_factory,
        store,
        StagerSettings(
            worker_id=worker_id,
            job_root=config.slurm.job_root,
            concurrency=config.storage.transfer_concurrency,
            tenant_bandwidth_bytes_s=config.storage.tenant_bandwidth_bytes_s,
            max_file_bytes=config.storage.max_file_bytes,
        ),
        on_jobs_changed=on_jobs_changed,
        on_staged_in=submitter_loop.wake,
    )

    def stage_step() -> bool:
        # A full batch may mean more work waiting.
        return stager.run_once() > 0

    def janitor_step() -> bool:
        # Uploads first: aborting one releases its reservation the orderly way.
        aborted = expire_uploads(session_factory, store)
        swept = sweep_storage(session_factory, store)
        if aborted or swept.blobs_deleted:
            logger.info(
                "storage janitor: %d uploads expired, %d blobs swept", len(aborted), swept.blobs_deleted
            )
        return False

    accounting_loop = _accounting_loop(config, session_factory, worker_id)

    def on_stop() -> None:
        stager.close()
        if accounting_loop is not None:
            # Hand the lease over now rather than when it expires; failing that, it expires.
            try:
                release_lease(session_factory, ACCOUNTING_LEASE, worker_id)
            except SQLAlchemyError as exc:
                logger.warning("accounting: could not release the leader lease: %s", exc)

    return JobWorkers(
        submitter=submitter_loop,
        reconciler=WorkerLoop(
            "job-reconciler",
            reconcile_step,
            interval_s=settings.poll_interval_s,
            max_backoff_s=settings.max_backoff_s,
        ),
        stager=WorkerLoop(
            "job-stager",
            stage_step,
            interval_s=settings.submit_interval_s,
            max_backoff_s=settings.max_backoff_s,
        ),
        janitor=WorkerLoop(
            "storage-janitor",
            janitor_step,
            interval_s=JANITOR_INTERVAL_S,
            max_backoff_s=settings.max_backoff_s,
        ),
        accounting=accounting_loop,
        on_stop=on_stop,
    )


def _accounting_loop(
    config: GatewayConfig, session_factory: sessionmaker[Session], worker_id: str
) -> WorkerLoop | None:
    """The "accounting-reconciler" loop: under the leader lease, one sacct pass into the ledger,
    then the budget backstop synced to Slurm. None when accounting is off."""
    settings = config.accounting
    if not settings.enabled:
        return None
    runner = SubprocessCommandRunner(
        timeout_s=max(config.slurm.command_timeout_s, ACCOUNTING_COMMAND_TIMEOUT_S),
        bin_dir=Path(config.slurm.bin_dir) if config.slurm.bin_dir is not None else None,
    )

    def leading() -> bool:
        return try_acquire_lease(
            session_factory, ACCOUNTING_LEASE, worker_id, ttl_s=settings.lease_s, now=datetime.now(UTC)
        )

    def accounting_step() -> bool:
        if not leading():
            return False
        now = int(time.time())
        report = reconcile_usage(
            session_factory,
            runner,
            now=now,
            lookback_s=settings.lookback_s,
            initial_window_s=settings.initial_window_s,
        )
        # A long pass may have outlived the lease: Slurm's limits are set by the leader alone.
        if not leading():
            return False
        commands = sync_budget_backstop(session_factory, runner, now=now)
        if report.records_changed or report.entries_posted or commands:
            logger.info(
                "accounting: %d records changed, %d entries and %d reversals posted, %d Slurm limits changed",
                report.records_changed,
                report.entries_posted,
                report.reversals_posted,
                len(commands),
            )
        return False

    return WorkerLoop(
        "accounting-reconciler",
        accounting_step,
        interval_s=settings.interval_s,
        max_backoff_s=max(config.workers.max_backoff_s, settings.interval_s),
    )


def _view_cache_invalidator(
    app: Litestar, loop: asyncio.AbstractEventLoop
) -> Callable[[Sequence[str]], None] | None:
    # A job is submitted within milliseconds of its acceptance: without this, a client polling
    # GET /v1/jobs/{id} would be shown the cached `accepted` view for the cache's whole TTL.
    cache = getattr(app.state, "job_view_cache", None)
    if cache is None:
        return None

    def invalidate(job_ids: Sequence[str]) -> None:
        if loop.is_closed():
            return
        for job_id in job_ids:
            # The cache belongs to the event loop; the submitter runs in its own thread.
            loop.call_soon_threadsafe(cache.invalidate, job_id)

    return invalidate


def _test_pause_after_submit() -> float:
    text = os.environ.get(ENV_TEST_PAUSE_AFTER_SUBMIT, "0")
    try:
        return max(0.0, float(text))
    except ValueError as exc:
        raise ConfigError(f"{ENV_TEST_PAUSE_AFTER_SUBMIT}: expected seconds, got {text!r}") from exc
