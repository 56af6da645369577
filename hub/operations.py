"""The hub's operational state: queues, workers, the scheduler, failed jobs, connections
and plugins, gathered for the admin's Operations and Plugins pages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from importlib.metadata import entry_points

from flask import Flask
from flask import current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Worker
from rq.defaults import DEFAULT_WORKER_TTL
from rq.exceptions import InvalidJobOperation
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry
from sqlalchemy import select

from hub.connections import MISSING_PREFIX
from hub.connections import WARNING_PREFIX
from hub.connections import HelpdeskMissing
from hub.connections import check_message
from hub.connections import open_helpdesk
from hub.crypto import SecretsUnreadable
from hub.extensions import db
from hub.health import redact_url
from hub.helpdesk import HelpdeskError
from hub.jobs import HEARTBEAT_KEY
from hub.jobs import QUEUES
from hub.jobs import HubJob
from hub.jobs import get_queue
from hub.jobs import redis_connection
from hub.models import Connection
from hub.models import ConnectionStatus
from hub.models import Survey
from hub.observability import ProcessCounts
from hub.observability import process_counts
from hub.observability import queue_depth
from hub.registry import ENTRY_POINT_GROUP
from hub.registry import PluginInfo
from hub.registry import Registry
from hub.scheduler import LAST_RUN_KEY
from hub.scheduler import LEADER_KEY

#: RQ's own job-id alphabet (`rq.job.JOB_ID_PATTERN`), anchored and bounded.
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: Failed jobs listed per queue (newest first); the total is shown beside them.
FAILED_SHOWN = 50
#: An idle worker heartbeats once per blocking wait (its TTL minus 15 s) and its key
#: expires TTL + 60 s after the last one; older than that, the worker is gone.
WORKER_ALIVE_SECONDS = DEFAULT_WORKER_TTL + 60
#: Line prefixes in a connection's status message that the page highlights.


@dataclass(frozen=True)
class QueueState:
    """One RQ queue's depth and the jobs around it."""

    name: str
    queued: int
    running: int
    failed: int
    scheduled: int


@dataclass(frozen=True)
class WorkerState:
    """One registered RQ worker, judged alive by the age of its last heartbeat."""

    name: str
    state: str
    queues: tuple[str, ...]
    last_heartbeat: datetime | None
    seconds_since_heartbeat: float | None
    current_job: str | None

    @property
    def alive(self) -> bool:
        age = self.seconds_since_heartbeat
        return age is not None and age <= WORKER_ALIVE_SECONDS


@dataclass(frozen=True)
class PeriodicRun:
    """When the scheduler last enqueued one periodic job."""

    name: str
    at: datetime


@dataclass(frozen=True)
class SchedulerState:
    """Whether a scheduler holds the leader lease, and what it enqueued last."""

    leader: bool
    lease_seconds_left: float | None
    last_runs: tuple[PeriodicRun, ...]


@dataclass(frozen=True)
class FailedJob:
    """A job in a queue's failed registry, with the last line of its error."""

    id: str
    func: str
    queue: str
    failed_at: datetime | None
    error: str


@dataclass(frozen=True)
class RedisState:
    """Everything the page reads from Redis, or why Redis could not be read."""

    url: str
    reachable: bool
    problem: str = ""
    queues: tuple[QueueState, ...] = ()
    workers: tuple[WorkerState, ...] = ()
    scheduler: SchedulerState | None = None
    failed_jobs: tuple[FailedJob, ...] = ()
    failed_total: int = 0
    last_heartbeat_job: datetime | None = None


@dataclass(frozen=True)
class ConnectionHealth:
    """A helpdesk connection as last checked, its message split into kinds of lines."""

    connection: Connection
    helpdesk_title: str | None
    summary: tuple[str, ...]
    warnings: tuple[str, ...]
    missing_roles: str


@dataclass(frozen=True)
class PluginRow:
    """A loaded plugin and what it adds to the hub."""

    info: PluginInfo
    source: str
    helpdesks: tuple[tuple[str, str], ...] = ()
    metrics: tuple[tuple[str, str], ...] = ()
    blueprints: tuple[str, ...] = ()
    periodic_jobs: tuple[str, ...] = ()


@dataclass(frozen=True)
class BlockedPlugin:
    """A plugin name listed in HUB_DISABLED_PLUGINS, and the installed package it blocks."""

    name: str
    distribution: str | None
    version: str | None


@dataclass(frozen=True)
class PluginOverview:
    """The Plugins page: loaded plugins and blocked ones."""

    loaded: tuple[PluginRow, ...]
    blocked: tuple[BlockedPlugin, ...]


# -- Redis side ---------------------------------------------------------------------------


def redis_state(app: Flask | None = None) -> RedisState:
    """Queues, workers, scheduler and failed jobs; a sentence instead when Redis is away."""
    app = app or current_app
    url = redact_url(app.config["REDIS_URL"])
    connection = redis_connection(app)
    try:
        now = datetime.now(UTC)
        queues = tuple(_queue_state(name, app) for name in QUEUES)
        failed, total = _failed_jobs(app)
        return RedisState(
            url=url,
            reachable=True,
            queues=queues,
            workers=_workers(connection, now),
            scheduler=_scheduler(connection, now),
            failed_jobs=failed,
            failed_total=total,
            last_heartbeat_job=_parse_time(connection.get(HEARTBEAT_KEY)),
        )
    except RedisError as exc:
        # redis-py names the host and port (or socket) but never the password.
        lines = str(exc).strip().splitlines()
        reason = lines[0].rstrip(".") if lines else type(exc).__name__
        return RedisState(
            url=url,
            reachable=False,
            problem=f"Redis at {url} is not reachable ({reason}).",
        )


def _queue_state(name: str, app: Flask) -> QueueState:
    depth = queue_depth(name, app)  # the numbers /metrics reports
    return QueueState(
        name=name,
        queued=depth.queued,
        running=depth.started,
        failed=depth.failed,
        scheduled=depth.scheduled,
    )


def _workers(connection: Redis, now: datetime) -> tuple[WorkerState, ...]:
    workers = []
    for worker in Worker.all(connection=connection, job_class=HubJob):
        beat = _aware(worker.last_heartbeat)
        workers.append(
            WorkerState(
                name=worker.name,
                state=str(worker.get_state()),
                queues=tuple(worker.queue_names()),
                last_heartbeat=beat,
                seconds_since_heartbeat=(now - beat).total_seconds() if beat else None,
                current_job=worker.get_current_job_id(),
            )
        )
    return tuple(sorted(workers, key=lambda w: w.name))


def _scheduler(connection: Redis, now: datetime) -> SchedulerState:
    lease_ms = connection.pttl(LEADER_KEY)
    # PTTL: -2 when no scheduler holds the lease; -1 would be a lease without expiry.
    leader = lease_ms is not None and lease_ms != -2
    runs = []
    for name, value in connection.hgetall(LAST_RUN_KEY).items():
        try:
            at = datetime.fromtimestamp(float(value), UTC)
        except (TypeError, ValueError, OverflowError):
            continue
        runs.append(PeriodicRun(name.decode(errors="replace"), at))
    return SchedulerState(
        leader=leader,
        lease_seconds_left=lease_ms / 1000 if leader and lease_ms > 0 else None,
        last_runs=tuple(sorted(runs, key=lambda run: run.name)),
    )


def _failed_jobs(app: Flask) -> tuple[tuple[FailedJob, ...], int]:
    found: list[FailedJob] = []
    total = 0
    for name in QUEUES:
        registry = FailedJobRegistry(queue=get_queue(name, app))
        total += registry.count
        ids = registry.get_job_ids(0, FAILED_SHOWN - 1, desc=True)
        jobs = Job.fetch_many(ids, connection=registry.connection)
        for job_id, job in zip(ids, jobs, strict=True):
            found.append(_failed_job(job_id, job, name))
    found.sort(key=lambda j: j.failed_at or datetime.min.replace(tzinfo=UTC), reverse=True)
    return tuple(found), total


def _failed_job(job_id: str, job: Job | None, queue: str) -> FailedJob:
    if job is None:  # expired between listing and fetching
        return FailedJob(job_id, "(job data expired)", queue, None, "")
    try:
        func = job.func_name or "?"
    except Exception:  # the data may not unpickle in the web process
        func = "(cannot be read by the web process)"
    result = job.latest_result()
    error = result.exc_string if result is not None and result.exc_string else ""
    return FailedJob(job.id, func, queue, _aware(job.ended_at), last_line(error))


def last_line(text: str) -> str:
    """The last non-empty line of a traceback: the exception and its message."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def retry_failed_job(job_id: str, app: Flask | None = None) -> str | None:
    """Put a failed job back on its queue; return the queue's name, or None if no queue's
    failed list holds it (retried already, expired, or never failed)."""
    if not JOB_ID.fullmatch(job_id):
        return None
    for name in QUEUES:
        registry = FailedJobRegistry(queue=get_queue(name, app))
        if job_id not in registry:
            continue
        try:
            registry.requeue(job_id)
        except (InvalidJobOperation, NoSuchJobError):
            return None  # another admin retried it a moment ago, or its data expired
        return name
    return None


def _parse_time(value: bytes | None) -> datetime | None:
    if not value:
        return None
    try:
        return _aware(datetime.fromisoformat(value.decode()))
    except ValueError:
        return None


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago `moment` was, in words ("45 s ago", "3 min ago", "2 h ago")."""
    if moment is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - _aware(moment)).total_seconds()
    if seconds < 0:
        return "just now"
    if seconds < 120:
        return f"{int(seconds)} s ago"
    if seconds < 7200:
        return f"{int(seconds // 60)} min ago"
    if seconds < 172800:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


def process_usage(app: Flask | None = None) -> ProcessCounts | None:
    """Helpdesk requests and 429s, scan times and job failures as `/metrics` reports them;
    None when Redis is away."""
    try:
        return process_counts(app)
    except RedisError:
        return None


# -- Database side ------------------------------------------------------------------------


def surveys() -> list[Survey]:
    """Every survey with its scan state, active ones first."""
    query = select(Survey).order_by(Survey.active.desc(), Survey.name, Survey.id)
    return list(db.session.execute(query).scalars())


def connection_health(registry: Registry) -> list[ConnectionHealth]:
    """Every helpdesk connection with its last check's result, warnings picked out."""
    connections = db.session.execute(select(Connection).order_by(Connection.name, Connection.id))
    rows = []
    for connection in connections.scalars():
        helpdesk = registry.helpdesks.get(connection.helpdesk)
        summary, warnings, missing = [], [], ""
        for line in (connection.status_message or "").splitlines():
            if line.startswith(WARNING_PREFIX):
                warnings.append(line.removeprefix(WARNING_PREFIX))
            elif line.startswith(MISSING_PREFIX):
                missing = line.removeprefix(MISSING_PREFIX)
            elif line.strip():
                summary.append(line)
        rows.append(
            ConnectionHealth(
                connection=connection,
                helpdesk_title=helpdesk.title if helpdesk else None,
                summary=tuple(summary),
                warnings=tuple(warnings),
                missing_roles=missing,
            )
        )
    return rows


def check_connection(connection: Connection) -> bool:
    """Verify the connection's credentials now and store the outcome; True if usable.

    The status message names the account and key, one line per warning (such as the
    key's expiry) and the missing roles; a failure becomes the message, never an error.
    """
    try:
        check = open_helpdesk(connection).verify()
    except (HelpdeskError, HelpdeskMissing, ValueError) as exc:
        status, lines = ConnectionStatus.ERROR, [_sentence(exc)]
    except SecretsUnreadable:
        status, lines = (
            ConnectionStatus.ERROR,
            [
                "The stored API key cannot be decrypted with the current HUB_SECRET_KEY: "
                "add the previous key to HUB_OLD_SECRET_KEYS, or enter the API key again."
            ],
        )
    except RedisError:
        # The connector shares the helpdesk's rate budget through Redis.
        status, lines = (
            ConnectionStatus.ERROR,
            ["Redis is not reachable, so the check could not run; try again once it is."],
        )
    else:
        status = ConnectionStatus.CONNECTED if check.ok else ConnectionStatus.ERROR
        lines = [check_message(check)]
    connection.status = status.value
    connection.status_message = _without_secrets("\n".join(lines), connection)
    db.session.commit()
    return status is ConnectionStatus.CONNECTED


def _sentence(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or f"The check failed ({type(exc).__name__})."


def _without_secrets(message: str, connection: Connection) -> str:
    # Connectors word their own errors; a helpdesk that echoes the key back must not
    # get it stored and shown.
    try:
        secrets = connection.get_secrets()
    except SecretsUnreadable:
        return message
    for value in secrets.values():
        if isinstance(value, str) and len(value) >= 4:
            message = message.replace(value, "***")
    return message


# -- Plugins ------------------------------------------------------------------------------


def plugin_overview(registry: Registry, disabled: list[str]) -> PluginOverview:
    """Each loaded plugin with what it registers, and each blocked one."""
    helpdesks = _owned(registry, "register_helpdesks", lambda h: (h.key, h.title))
    metrics = _owned(registry, "register_metrics", lambda m: (m.key, m.title))
    blueprints = _owned(registry, "register_blueprints", lambda bp: bp.name)
    periodic = _owned(registry, "register_periodic_jobs", lambda job: job.name)
    rows = []
    for info in registry.plugins():
        if info.distribution != "(not installed)":
            source = "installed package"
        elif info.name.startswith("hub."):
            source = "part of the hub"
        else:
            source = "HUB_PLUGINS"
        rows.append(
            PluginRow(
                info=info,
                source=source,
                helpdesks=tuple(helpdesks.get(info.name, ())),
                metrics=tuple(metrics.get(info.name, ())),
                blueprints=tuple(blueprints.get(info.name, ())),
                periodic_jobs=tuple(periodic.get(info.name, ())),
            )
        )
    installed = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    blocked = []
    for name in dict.fromkeys(disabled):
        entry_point = installed.get(name)
        dist = entry_point.dist if entry_point else None
        blocked.append(
            BlockedPlugin(
                name=name,
                distribution=dist.metadata["name"] if dist else None,
                version=dist.version if dist else None,
            )
        )
    return PluginOverview(loaded=tuple(rows), blocked=tuple(blocked))


def _owned(registry: Registry, hook_name: str, describe) -> dict[str, list]:
    # Which plugin registered which item is known only inside the registry's hook calls.
    owned: dict[str, list] = {}
    for plugin, item in registry.registrations(hook_name):
        owned.setdefault(plugin, []).append(describe(item))
    return owned
