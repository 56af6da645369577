"""The scheduler: enqueues the periodic jobs declared in one table; one process acts at a time."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid

from flask import Flask
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import JobStatus
from rq.registry import StartedJobRegistry
from sqlalchemy.exc import SQLAlchemyError

from hub.contracts import PeriodicJob
from hub.jobs import CONTROL
from hub.jobs import QUEUES
from hub.jobs import SENDS
from hub.jobs import HubJob
from hub.jobs import get_queue
from hub.jobs import heartbeat
from hub.jobs import redis_connection
from hub.registry import PluginError

log = logging.getLogger(__name__)


def hub_periodic_jobs(app: Flask) -> list[PeriodicJob]:
    """The hub's own periodic jobs; plugins add theirs through `register_periodic_jobs`."""
    from hub.pipeline.recovery import reconcile
    from hub.pipeline.recovery import scan_active_surveys
    from hub.pipeline.reminders import send_reminders

    return [
        PeriodicJob("heartbeat", heartbeat, interval=60, queue=CONTROL),
        PeriodicJob(
            "scan-surveys", scan_active_surveys, app.config["HUB_SCAN_INTERVAL"], queue=CONTROL
        ),
        PeriodicJob("reconcile", reconcile, app.config["HUB_RECONCILE_INTERVAL"], queue=CONTROL),
        PeriodicJob("reminders", send_reminders, interval=600, queue=SENDS),
    ]


LEADER_KEY = "surveyhub:scheduler:leader"
LAST_RUN_KEY = "surveyhub:scheduler:last-run"
_UNFINISHED = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED}

# Extend our lease only while we still hold it, atomically.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def periodic_jobs(app: Flask) -> list[PeriodicJob]:
    """The hub's table plus every plugin's periodic jobs (on queues workers listen to)."""
    jobs = [*hub_periodic_jobs(app), *app.extensions["hub"].registry.periodic_jobs()]
    for job in jobs:
        if job.queue not in QUEUES:
            raise PluginError(
                f"The periodic job '{job.name}' uses the queue '{job.queue}', which no "
                f"worker listens to; use one of: {', '.join(QUEUES)}."
            )
    return jobs


class Scheduler:
    """Enqueues due periodic jobs while holding a Redis lease; others wait for it."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.tick = app.config["HUB_SCHEDULER_TICK"]
        self.lease_ms = int(max(self.tick * 3, 15) * 1000)
        self.identity = f"{uuid.uuid4().hex}"
        self.jobs = periodic_jobs(app)
        self.stopping = threading.Event()

    @property
    def redis(self):
        return redis_connection(self.app)

    def acquire(self) -> bool:
        """Take or renew the leader lease; False while another scheduler holds it."""
        if self.redis.set(LEADER_KEY, self.identity, nx=True, px=self.lease_ms):
            return True
        return bool(self.redis.eval(_RENEW, 1, LEADER_KEY, self.identity, self.lease_ms))

    def release(self) -> None:
        """Give the lease up so a waiting scheduler takes over at once."""
        self.redis.eval(_RELEASE, 1, LEADER_KEY, self.identity)

    def run_due(self, now: float | None = None) -> list[str]:
        """Enqueue every job whose interval has passed; return the names enqueued."""
        now = time.time() if now is None else now
        last_runs = {k.decode(): float(v) for k, v in self.redis.hgetall(LAST_RUN_KEY).items()}
        enqueued = []
        for job in self.jobs:
            if now - last_runs.get(job.name, 0.0) < job.interval:
                continue
            job_id = f"periodic-{job.name}"
            if self._still_running(job_id):
                continue  # never two copies of one periodic job at once
            get_queue(job.queue, self.app).enqueue(job.func, job_id=job_id)
            self.redis.hset(LAST_RUN_KEY, job.name, now)
            enqueued.append(job.name)
        return enqueued

    def _still_running(self, job_id: str) -> bool:
        try:
            job = HubJob.fetch(job_id, connection=self.redis)
        except NoSuchJobError:
            return False
        status = job.get_status(refresh=False)
        if status == JobStatus.STARTED:
            # A worker killed mid-job leaves it "started" until RQ's own clean-up, every
            # 10 minutes: no reconciles or scans meanwhile. Its heartbeat stops, so its
            # entry in the started registry expires within a minute or two: clean that
            # registry now and ask again.
            StartedJobRegistry(job.origin, connection=self.redis, job_class=HubJob).cleanup()
            status = job.get_status(refresh=True)
        return status in _UNFINISHED

    def enqueue_due_scans(self) -> int:
        """Start the scans webhooks asked for that are due now: checked every tick, so a
        survey goes out within seconds of its ticket being due, not a reconcile later."""
        from hub.pipeline.recovery import enqueue_due_scans

        try:
            with self.app.app_context():
                return enqueue_due_scans()
        except (SQLAlchemyError, RedisError) as exc:
            log.warning("Could not start due scans (%s); the reconciler will.", exc)
            return 0

    def run(self) -> None:
        """Loop until `stopping` is set: lead and enqueue, or wait for the leader to go."""
        waiting_logged = False
        try:
            while not self.stopping.is_set():
                try:
                    if self.acquire():
                        if waiting_logged:
                            log.info("Took over as the active scheduler.")
                            waiting_logged = False
                        for name in self.run_due():
                            log.info("Enqueued periodic job %s", name)
                        self.enqueue_due_scans()
                    elif not waiting_logged:
                        log.info("Another scheduler is active; waiting to take over.")
                        waiting_logged = True
                except RedisError as exc:
                    log.error("Redis is unreachable (%s); retrying in %ss.", exc, self.tick)
                self.stopping.wait(self.tick)
        finally:
            with contextlib.suppress(RedisError):
                self.release()


__all__ = ["Scheduler", "hub_periodic_jobs", "periodic_jobs"]
