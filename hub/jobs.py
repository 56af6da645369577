"""RQ wiring: the Redis connection, queues, the job class and the worker."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import ClassVar

from flask import Flask
from flask import current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq import Worker
from rq import get_current_job
from rq.job import Job
from sqlalchemy import text

from hub.extensions import db
from hub.logs import clear as clear_log_context
from hub.logs import configure_logging
from hub.models import utcnow

#: Housekeeping that keeps the rest moving (heartbeat, reconciler, scan scheduling).
CONTROL = "control"
WRITE_BACKS = "write-backs"
SENDS = "sends"
SCANS = "scans"
DEFAULT = "default"
#: Every worker serves these in this order: a rating reaches the helpdesk within its
#: grace time plus one reconcile interval even while thousands of sends are queued, and
#: a long scan never delays a send. Plugins' jobs run on `default`, last.
QUEUES = (CONTROL, WRITE_BACKS, SENDS, SCANS, DEFAULT)
HEARTBEAT_KEY = "surveyhub:heartbeat"
LOG_FORMAT = "%(asctime)s %(levelname)s [job %(job_id)s] %(name)s: %(message)s"


def redis_connection(app: Flask | None = None) -> Redis:
    """The app's Redis client (created once per app, with short timeouts)."""
    app = app or current_app
    state = app.extensions["hub"]
    if state.redis is None:
        state.redis = Redis.from_url(
            app.config["REDIS_URL"], socket_connect_timeout=3, socket_timeout=10
        )
    return state.redis


def get_queue(name: str = DEFAULT, app: Flask | None = None) -> Queue:
    """An RQ queue bound explicitly to the app's Redis connection."""
    return Queue(name, connection=redis_connection(app), job_class=HubJob)


def enqueue(func: Callable[..., Any], *args: Any, queue: str = DEFAULT, **kwargs: Any) -> Job:
    """Put `func(*args, **kwargs)` on a queue; RQ options such as `job_id` pass through."""
    return get_queue(queue).enqueue(func, *args, **kwargs)


#: How long an "enqueued" marker keeps copies of a job off the queue.
MARKER_TTL = 300


def enqueue_once(
    func: Callable[..., Any],
    marker: str,
    *args: Any,
    ttl: int = MARKER_TTL,
    queue: str = DEFAULT,
    **options: Any,
) -> bool:
    """Enqueue `func(*args)` unless it was enqueued under `marker` within `ttl` seconds.

    The database row the job works on is the real guard against doing work twice (jobs
    claim their row); the marker only keeps the queue from filling with copies. When
    Redis is away nothing is enqueued and False is returned: the reconciler enqueues the
    work again from the database once Redis is back.
    """
    try:
        connection = redis_connection()
        if not connection.set(enqueued_key(marker), 1, nx=True, ex=ttl):
            return False
        get_queue(queue).enqueue(func, *args, **options)
        return True
    except RedisError as exc:
        logging.getLogger(__name__).warning("Could not enqueue %s: %s", marker, exc)
        return False


def enqueued_key(marker: str) -> str:
    """The Redis key that says `marker`'s job is queued or running."""
    return f"surveyhub:enqueued:{marker}"


def mark_enqueued(markers: Sequence[str], ttl: int, only_new: bool = True) -> list[bool]:
    """Set many markers in one round trip; return which were set (with `only_new`,
    those not set already). Raises `RedisError`."""
    with redis_connection().pipeline(transaction=False) as pipe:
        for marker in markers:
            pipe.set(enqueued_key(marker), 1, nx=only_new, ex=ttl)
        return [bool(result) for result in pipe.execute()]


def forget_enqueued(*markers: str) -> None:
    """Allow the markers' jobs to be enqueued again at once (they finished or will retry)."""
    if markers:
        with contextlib.suppress(RedisError):
            redis_connection().delete(*(enqueued_key(marker) for marker in markers))


class HubJob(Job):
    """A job that runs inside a fresh app context of the worker's app."""

    app: ClassVar[Flask | None] = None

    def perform(self) -> Any:
        if HubJob.app is None:
            raise RuntimeError("HubJob.app is not bound; start workers with `surveyhub worker`.")
        with HubJob.app.app_context():
            # The work horse is a fork: never reuse database connections of the parent.
            db.engine.dispose(close=False)
            clear_log_context()
            try:
                return super().perform()
            finally:
                db.session.remove()
                clear_log_context()


class JobIdFilter(logging.Filter):
    """Adds `job_id` to every log record so each line names the job it came from."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = get_current_job()
        record.job_id = job.id if job else "-"
        return True


def configure_job_logging(level: str, fmt: str = "text") -> None:
    """Log to stderr with the current job id on every line (`fmt` "json": one JSON
    object per line, see `hub.logs`)."""
    configure_logging(level, fmt)


def run_worker(app: Flask, queues: Sequence[str] = QUEUES, burst: bool = False) -> bool:
    """Process jobs from `queues` until stopped (or until empty with `burst`)."""
    from hub.observability import count_job_exception

    HubJob.app = app
    connection = redis_connection(app)
    worker = Worker(
        [Queue(name, connection=connection, job_class=HubJob) for name in queues],
        connection=connection,
        job_class=HubJob,
        exception_handlers=[count_job_exception],  # counts; RQ files the job as before
    )
    configure_job_logging(app.config["HUB_LOG_LEVEL"], app.config["HUB_LOG_FORMAT"])
    freeze_heap()
    return worker.work(burst=burst, logging_level=app.config["HUB_LOG_LEVEL"])


def freeze_heap() -> None:
    """Keep the worker's start-up objects (modules, the app) out of its work horses'
    garbage collections.

    RQ forks a work horse per job. A horse's first full collection otherwise walks
    every object inherited from the worker, touching each copy-on-write page: about
    0.1 s per job, most of a write-back's time (docs/performance.md). Frozen objects
    are never collected, which is right for what lives as long as the worker.
    """
    gc.collect()
    gc.freeze()


def heartbeat() -> str:
    """Record that a worker ran a job and reached the database just now (`/readyz`)."""
    db.session.execute(text("SELECT 1"))
    now = utcnow().isoformat()
    redis_connection().set(HEARTBEAT_KEY, now)
    logging.getLogger(__name__).info("heartbeat %s", now)
    return now
