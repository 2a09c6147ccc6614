"""Typed gateway configuration, loaded from a TOML file plus environment overrides.

The configuration is built once at start-up and passed to whatever needs it;
nothing here is read at import time.

Environment overrides (applied on top of the file, before validation):

- ``SLURM_GATEWAY_DATABASE_URL`` -> ``database.url``
- ``SLURM_GATEWAY_STORAGE_URL``  -> ``storage.url``
- ``SLURM_GATEWAY_S3_ENDPOINT``  -> ``storage.s3.endpoint_url``
- ``SLURM_GATEWAY_STATE_DIR``    -> ``state_dir``
- ``SLURM_GATEWAY_PORT``         -> ``server.port``

When ``database.url`` or ``storage.url`` is not set, it is derived from the
absolute form of ``state_dir``: ``sqlite:///<state_dir>/gateway.db`` and
``file://<state_dir>/storage``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from slurm.batch_job import PartitionFabric

DEFAULT_STATE_DIR = "./var"

ENV_DATABASE_URL = "SLURM_GATEWAY_DATABASE_URL"
ENV_STORAGE_URL = "SLURM_GATEWAY_STORAGE_URL"
ENV_STATE_DIR = "SLURM_GATEWAY_STATE_DIR"
ENV_PORT = "SLURM_GATEWAY_PORT"
ENV_S3_ENDPOINT = "SLURM_GATEWAY_S3_ENDPOINT"

PortNumber = Annotated[int, msgspec.Meta(ge=1, le=65535)]
NonEmptyString = Annotated[str, msgspec.Meta(min_length=1)]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]


class ConfigError(Exception):
    """The configuration could not be read or is invalid; the message says where."""


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Where the HTTP server listens, and how it trades freshness and logging for speed."""

    host: NonEmptyString = "127.0.0.1"
    port: PortNumber = 8000
    # One log line per request costs more than answering a status read; off unless asked for.
    access_log: bool = False
    # How long GET /v1/jobs/{id} may answer from this process's cache (0: always the database);
    # capped at workers.poll_interval_s, how stale observed state can be anyway.
    job_status_cache_s: Annotated[float, msgspec.Meta(ge=0)] = 1.0


class DatabaseConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """SQLAlchemy database URL (SQLite for development, PostgreSQL in production)."""

    url: NonEmptyString


class S3Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """How to reach an S3 storage root; unset values fall back to botocore's chain (AWS_*)."""

    endpoint_url: NonEmptyString | None = None
    region: NonEmptyString = "us-east-1"
    access_key_id: NonEmptyString | None = None
    # A file holding the secret key, so the secret stays out of the config file.
    secret_access_key_path: NonEmptyString | None = None


class StorageConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Object storage: fsspec URL of the root (``file:///dir`` or ``s3://bucket/prefix``) and limits."""

    url: NonEmptyString
    s3: S3Config = msgspec.field(default_factory=S3Config)
    # The largest single file accepted (uploads and staged outputs).
    max_file_bytes: Annotated[int, msgspec.Meta(ge=1)] = 1024**4
    # Presigned multipart uploads: part size offered to clients, URL lifetime, and how long an
    # unfinished upload (and the quota it reserves) is kept for resuming.
    upload_part_bytes: Annotated[int, msgspec.Meta(ge=5 * 1024 * 1024, le=5 * 1024**3)] = 64 * 1024 * 1024
    upload_url_ttl_s: Annotated[int, msgspec.Meta(ge=60, le=7 * 24 * 3600)] = 3600
    upload_expiry_s: Annotated[int, msgspec.Meta(ge=300)] = 24 * 3600
    # Stage-in/stage-out: transfers running at once (whole gateway), and each tenant's share of
    # bandwidth (bytes/s, token bucket; None: unlimited).
    transfer_concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    tenant_bandwidth_bytes_s: Annotated[int, msgspec.Meta(ge=1024)] | None = None
    # Storage quota (bytes) of a tenant created without one; None: unlimited.
    default_tenant_quota_bytes: Annotated[int, msgspec.Meta(ge=0)] | None = None


class SlurmConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """How the gateway talks to Slurm."""

    # "cli": Slurm's client commands (run as root, jobs submitted with --uid); "rest": slurmrestd.
    driver: Literal["cli", "rest"] = "cli"
    command_timeout_s: PositiveSeconds = 30.0
    bin_dir: NonEmptyString | None = None
    # slurmrestd base URL and the cluster's HS256 JWT key (per-user tokens), for driver "rest".
    rest_url: NonEmptyString = "http://127.0.0.1:6820"
    jwt_key_path: NonEmptyString = "/var/lib/slurm/slurmctld/jwt_hs256.key"
    # Shared directory every node sees; each job gets <job_root>/<tenant>/<job id>.
    job_root: NonEmptyString = "/var/lib/slurm-gateway/jobs"
    # Network settings per partition for the runtimes (interface, UCX/NCCL, extra variables);
    # partitions not named get default_fabric (none: the runtimes' own defaults). The dev
    # cluster's loopback settings are in dev/gateway.toml.
    fabric: dict[str, PartitionFabric] = msgspec.field(default_factory=dict)
    default_fabric: PartitionFabric | None = None


class AuthConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """How bearer tokens are verified (and, for HS256, minted by `slurm-gateway token`)."""

    # HS256 with a shared secret file (embedded default), or RS256 with a JWKS file or URL.
    algorithm: Literal["HS256", "RS256"] = "HS256"
    # HS256 secret; created with random bytes on first start when absent.
    hs256_secret_path: NonEmptyString | None = None
    jwks_path: NonEmptyString | None = None
    jwks_url: NonEmptyString | None = None
    issuer: NonEmptyString = "slurm-gateway"
    audience: NonEmptyString = "slurm-gateway"
    # Clock skew tolerated on exp/iat/nbf.
    leeway_s: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    # A token with an unknown kid refetches jwks_url at most this often (key rotation delay).
    jwks_refresh_cooldown_s: Annotated[float, msgspec.Meta(ge=0)] = 30.0


class WorkerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Background loops: the submitter and the reconciler."""

    enabled: bool = True
    submit_interval_s: PositiveSeconds = 0.5
    poll_interval_s: PositiveSeconds = 2.0
    max_backoff_s: PositiveSeconds = 30.0
    # A submission lease older than this is presumed dead (crashed worker) and recovered.
    submit_lease_s: PositiveSeconds = 60.0
    # sbatch calls one submitter runs at once; a few overlap slurmctld round trips, more only
    # queue up inside slurmctld.
    submit_concurrency: Annotated[int, msgspec.Meta(ge=1, le=32)] = 4
    # A running attempt whose heartbeat file is older than this is cancelled as hung (jobs may
    # set their own limit, or turn the heartbeat off).
    heartbeat_stale_s: Annotated[int, msgspec.Meta(ge=5, le=7 * 24 * 3600)] = 10


class AccountingConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The usage reconciler (sacct into the cost ledger) and the Slurm budget backstop."""

    # Run the reconciler loop in this process (with workers.enabled); one process leads at a time.
    enabled: bool = True
    # Seconds between passes.
    interval_s: PositiveSeconds = 60.0
    # Each pass re-reads this far before the last reconciled instant, for records that reach
    # slurmdbd late (e.g. after a slurmdbd outage).
    lookback_s: Annotated[int, msgspec.Meta(ge=0, le=366 * 24 * 3600)] = 6 * 3600
    # The first pass (no cursor yet) reads this far back: 35 days, a whole month and some.
    initial_window_s: Annotated[int, msgspec.Meta(ge=1, le=5 * 366 * 24 * 3600)] = 35 * 24 * 3600
    # The leader lease's lifetime; the leader renews it every pass, so it must exceed interval_s.
    lease_s: PositiveSeconds = 120.0

    def __post_init__(self) -> None:
        if self.lease_s <= self.interval_s:
            # The leader renews its lease once per pass.
            raise ValueError("lease_s must be greater than interval_s")


class GatewayConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The whole gateway configuration."""

    state_dir: NonEmptyString = DEFAULT_STATE_DIR
    database: DatabaseConfig
    storage: StorageConfig
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    slurm: SlurmConfig = msgspec.field(default_factory=SlurmConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    workers: WorkerConfig = msgspec.field(default_factory=WorkerConfig)
    accounting: AccountingConfig = msgspec.field(default_factory=AccountingConfig)


def load_config(path: Path | None, env: Mapping[str, str]) -> GatewayConfig:
    """Read ``path`` (TOML, optional), apply env overrides and validate.

    Raises ConfigError naming the file and the offending key on any problem.
    """
    raw = _read_toml(path) if path is not None else {}
    _apply_env_overrides(raw, env)
    _fill_derived_defaults(raw)
    try:
        return msgspec.convert(raw, GatewayConfig)
    except msgspec.ValidationError as exc:
        source = str(path) if path is not None else "configuration"
        raise ConfigError(f"{source}: {exc}") from exc


def config_as_json(config: GatewayConfig) -> str:
    """Render the resolved configuration as indented JSON."""
    return msgspec.json.format(msgspec.json.encode(config), indent=2).decode()


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as config_file:
            return tomllib.load(config_file)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc


def _apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    if ENV_STATE_DIR in env:
        raw["state_dir"] = env[ENV_STATE_DIR]
    if ENV_DATABASE_URL in env:
        _table(raw, "database")["url"] = env[ENV_DATABASE_URL]
    if ENV_STORAGE_URL in env:
        _table(raw, "storage")["url"] = env[ENV_STORAGE_URL]
    if ENV_S3_ENDPOINT in env:
        _table(_table(raw, "storage"), "s3")["endpoint_url"] = env[ENV_S3_ENDPOINT]
    if ENV_PORT in env:
        try:
            port = int(env[ENV_PORT])
        except ValueError as exc:
            raise ConfigError(f"{ENV_PORT}: expected an integer, got {env[ENV_PORT]!r}") from exc
        _table(raw, "server")["port"] = port


def _fill_derived_defaults(raw: dict[str, Any]) -> None:
    state_dir = raw.get("state_dir", DEFAULT_STATE_DIR)
    if not isinstance(state_dir, str) or not state_dir:
        # Leave it to validation to report the bad state_dir by its key.
        return
    state_path = Path(state_dir).absolute()
    defaults = {
        "database": f"sqlite:///{state_path / 'gateway.db'}",
        "storage": (state_path / "storage").as_uri(),
    }
    for section, default_url in defaults.items():
        table = raw.setdefault(section, {})
        if isinstance(table, dict):
            table.setdefault("url", default_url)


def _table(raw: dict[str, Any], name: str) -> dict[str, Any]:
    table = raw.setdefault(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"`{name}` must be a table, got {type(table).__name__}")
    return table
