"""What the hub has done and is doing, as numbers: for `/metrics` (Prometheus) and the
Operations page alike.

Counts that live in the database (deliveries, ratings, write-backs) are read from it at
scrape time, one GROUP BY each, so every web process on every machine answers the same
numbers and they equal the database's. What only processes see (helpdesk requests and
429s, scan durations, jobs that raised) is counted in Redis hashes, which every worker on
every machine shares; RQ's queues are read from Redis. Nothing here is kept in process
memory, so a restart or a second machine never splits a count.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from flask import Flask
from flask import current_app
from redis.exceptions import RedisError
from rq import Worker
from rq.registry import FailedJobRegistry
from rq.registry import ScheduledJobRegistry
from rq.registry import StartedJobRegistry
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from hub.extensions import db
from hub.helpdesk import RATE_LIMITED_KEY
from hub.helpdesk import REQUESTS_KEY
from hub.jobs import QUEUES
from hub.jobs import get_queue
from hub.jobs import redis_connection
from hub.models import Delivery
from hub.models import DeliveryState
from hub.models import Rating
from hub.models import Survey
from hub.models import WriteBack
from hub.models import WriteBackState

log = logging.getLogger(__name__)

#: Redis hashes of scans by connection: completed and failed scans ("connection-3:ok"),
#: their seconds in total (same fields), and the last completed scan's seconds.
SCANS_KEY = "surveyhub:metrics:scans"
SCAN_SECONDS_KEY = "surveyhub:metrics:scan-seconds"
SCAN_LAST_KEY = "surveyhub:metrics:scan-last-seconds"
#: Redis hash of jobs that raised, by queue (each failed attempt of a retried job counts).
JOB_EXCEPTIONS_KEY = "surveyhub:metrics:job-exceptions"
#: Queue states reported per RQ queue.
JOB_STATES = ("queued", "started", "scheduled", "failed")

#: The families `counts_from_database` and `counts_from_metrics` compare, with the
#: metric name and label each one has in `/metrics`.
DATABASE_FAMILIES = {
    "deliveries": ("surveyhub_deliveries", "state"),
    "deliveries_skipped": ("surveyhub_deliveries_skipped", "reason"),
    "ratings": ("surveyhub_ratings", "metric"),
    "write_backs": ("surveyhub_write_backs", "state"),
}


def connection_label(connection_id: int) -> str:
    """A connection's name in the counters: its helpdesk context's name."""
    return f"connection-{connection_id}"


# -- The database -------------------------------------------------------------------------


def counts_from_database() -> dict[str, dict[str, int]]:
    """Deliveries by state, skipped deliveries by reason, ratings by metric and
    write-backs by state, as the database holds them now (needs an app context).

    Known states and the installed metrics are present with 0; this is what `/metrics`
    shows, so ``counts_from_metrics(body) == counts_from_database()`` after any run.
    """
    deliveries = dict.fromkeys((state.value for state in DeliveryState), 0)
    deliveries.update(
        # ix_deliveries_state_updated_at: an index-only count on PostgreSQL.
        db.session.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all()
    )
    skipped = dict(
        db.session.execute(
            select(Delivery.skip_reason, func.count())
            .where(Delivery.state == DeliveryState.SKIPPED.value)
            .group_by(Delivery.skip_reason)
        ).all()
    )
    # Count per survey (ix_ratings_survey_created_at), then sum per metric: the join
    # touches one row per survey, not one per rating.
    per_survey = (
        select(Rating.survey_id, func.count().label("n")).group_by(Rating.survey_id).subquery()
    )
    ratings = dict.fromkeys(_installed_metrics(), 0)
    ratings.update(
        db.session.execute(
            select(Survey.metric, func.sum(per_survey.c.n))
            .join(per_survey, per_survey.c.survey_id == Survey.id)
            .group_by(Survey.metric)
        ).all()
    )
    write_backs = dict.fromkeys((state.value for state in WriteBackState), 0)
    write_backs.update(
        db.session.execute(select(WriteBack.state, func.count()).group_by(WriteBack.state)).all()
    )
    return {
        "deliveries": _ints(deliveries),
        "deliveries_skipped": _ints({(k or "(none)"): v for k, v in skipped.items()}),
        "ratings": _ints(ratings),
        "write_backs": _ints(write_backs),
    }


def _installed_metrics() -> list[str]:
    try:
        return sorted(current_app.extensions["hub"].registry.metrics)
    except (KeyError, AttributeError):
        return []


def _ints(counts: dict[Any, Any]) -> dict[str, int]:
    return {str(key): int(value or 0) for key, value in counts.items()}


# -- Redis --------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueDepth:
    """One RQ queue's jobs by state."""

    name: str
    queued: int
    started: int
    scheduled: int
    failed: int


def queue_depth(name: str, app: Flask | None = None) -> QueueDepth:
    """How many jobs wait in, run from, are scheduled for and failed in queue `name`."""
    queue = get_queue(name, app)
    return QueueDepth(
        name=name,
        queued=queue.count,
        started=StartedJobRegistry(queue=queue).count,
        scheduled=ScheduledJobRegistry(queue=queue).count,
        failed=FailedJobRegistry(queue=queue).count,
    )


@dataclass(frozen=True)
class HelpdeskUse:
    """One connection's requests to its helpdesk and the 429s among them, since Redis
    started counting (counters only grow)."""

    requests: int = 0
    rate_limited: int = 0


@dataclass(frozen=True)
class ScanTimes:
    """One connection's completed and failed scans, their seconds, and the last one's."""

    completed: int = 0
    failed: int = 0
    completed_seconds: float = 0.0
    failed_seconds: float = 0.0
    last_seconds: float | None = None


@dataclass(frozen=True)
class ProcessCounts:
    """What the processes counted in Redis, by connection label and by queue."""

    helpdesk: dict[str, HelpdeskUse] = field(default_factory=dict)
    scans: dict[str, ScanTimes] = field(default_factory=dict)
    job_exceptions: dict[str, int] = field(default_factory=dict)


def process_counts(app: Flask | None = None) -> ProcessCounts:
    """The counters processes keep in Redis (raises `RedisError`)."""
    redis = redis_connection(app)
    with redis.pipeline(transaction=False) as pipe:
        for key in (
            REQUESTS_KEY,
            RATE_LIMITED_KEY,
            SCANS_KEY,
            SCAN_SECONDS_KEY,
            SCAN_LAST_KEY,
            JOB_EXCEPTIONS_KEY,
        ):
            pipe.hgetall(key)
        requests, limited, scans, seconds, last, exceptions = (
            _decoded(found) for found in pipe.execute()
        )
    helpdesk = {
        name: HelpdeskUse(int(requests.get(name, 0)), int(limited.get(name, 0)))
        for name in sorted(set(requests) | set(limited))
    }
    names = sorted({f.rsplit(":", 1)[0] for f in scans} | set(last))
    scan_times = {
        name: ScanTimes(
            completed=int(scans.get(f"{name}:ok", 0)),
            failed=int(scans.get(f"{name}:error", 0)),
            completed_seconds=float(seconds.get(f"{name}:ok", 0)),
            failed_seconds=float(seconds.get(f"{name}:error", 0)),
            last_seconds=float(last[name]) if name in last else None,
        )
        for name in names
    }
    return ProcessCounts(
        helpdesk=helpdesk,
        scans=scan_times,
        job_exceptions={name: int(value) for name, value in sorted(exceptions.items())},
    )


def _decoded(found: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in found.items()}


def record_scan(connection_id: int, seconds: float, ok: bool = True) -> None:
    """Count one scan of a connection and its duration (never raises)."""
    name = connection_label(connection_id)
    outcome = f"{name}:{'ok' if ok else 'error'}"
    with contextlib.suppress(RedisError), redis_connection().pipeline(transaction=False) as pipe:
        pipe.hincrby(SCANS_KEY, outcome, 1)
        pipe.hincrbyfloat(SCAN_SECONDS_KEY, outcome, seconds)
        if ok:
            pipe.hset(SCAN_LAST_KEY, name, round(seconds, 3))
        pipe.execute()


def count_job_exception(job: Any, *exc_info: Any) -> bool:
    """An RQ exception handler: count the job's failure by queue, then let RQ go on."""
    with contextlib.suppress(RedisError):
        job.connection.hincrby(JOB_EXCEPTIONS_KEY, job.origin or "?", 1)
    return True


# -- Prometheus ---------------------------------------------------------------------------


class HubCollector:
    """A prometheus-client collector computing every hub metric at scrape time from the
    database and Redis. A source that cannot be read is reported by
    `surveyhub_metrics_source_up{source}` 0, never by an error."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def describe(self) -> list:
        return []  # computed at each scrape; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        with self._context():
            up = GaugeMetricFamily(
                "surveyhub_metrics_source_up",
                "Whether the scrape could read each source (1) or not (0).",
                labels=["source"],
            )
            for source, families in (("database", self._database), ("redis", self._redis)):
                try:
                    found = list(families())
                except (SQLAlchemyError, RedisError, OSError) as exc:
                    if source == "database":
                        with contextlib.suppress(Exception):
                            db.session.rollback()
                    log.warning("metrics: the %s could not be read: %s", source, _first(exc))
                    up.add_metric([source], 0)
                    continue
                up.add_metric([source], 1)
                yield from found
            yield up

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        from flask import has_app_context

        if has_app_context():
            yield
        else:
            with self.app.app_context():
                yield

    def _database(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        counts = counts_from_database()
        helps = {
            "deliveries": "Deliveries (one per survey and ticket) in each state.",
            "deliveries_skipped": "Skipped deliveries by the reason they were skipped.",
            "ratings": "Ratings by metric (nps, csat, ces, ...).",
            "write_backs": "Write-backs of ratings to the helpdesk in each state.",
        }
        for key, (name, label) in DATABASE_FAMILIES.items():
            family = GaugeMetricFamily(name, helps[key], labels=[label])
            for value, count in sorted(counts[key].items()):
                family.add_metric([value], count)
            yield family

    def _redis(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily
        from prometheus_client.core import GaugeMetricFamily
        from prometheus_client.core import SummaryMetricFamily

        app = self.app
        jobs = GaugeMetricFamily(
            "surveyhub_rq_jobs", "RQ jobs per queue and state.", labels=["queue", "state"]
        )
        for name in QUEUES:
            depth = queue_depth(name, app)
            for state in JOB_STATES:
                jobs.add_metric([name, state], getattr(depth, state))
        workers = GaugeMetricFamily(
            "surveyhub_rq_workers", "RQ workers registered in Redis (on every machine)."
        )
        workers.add_metric([], Worker.count(connection=redis_connection(app)))
        counted = process_counts(app)
        exceptions = CounterMetricFamily(
            "surveyhub_rq_job_exceptions",
            "Jobs that raised, by queue (each failed attempt of a retried job counts).",
            labels=["queue"],
        )
        for name in sorted(set(QUEUES) | set(counted.job_exceptions)):
            exceptions.add_metric([name], counted.job_exceptions.get(name, 0))
        requests = CounterMetricFamily(
            "surveyhub_helpdesk_requests",
            "HTTP requests made to the helpdesk, by connection.",
            labels=["connection"],
        )
        limited = CounterMetricFamily(
            "surveyhub_helpdesk_rate_limited",
            "Helpdesk answers that were 429 (rate limited), by connection.",
            labels=["connection"],
        )
        for name, use in counted.helpdesk.items():
            requests.add_metric([name], use.requests)
            limited.add_metric([name], use.rate_limited)
        durations = SummaryMetricFamily(
            "surveyhub_scan_duration_seconds",
            "Scans of a connection (one pass serves all its surveys) and their seconds.",
            labels=["connection", "outcome"],
        )
        last = GaugeMetricFamily(
            "surveyhub_scan_last_duration_seconds",
            "Seconds the connection's last completed scan took.",
            labels=["connection"],
        )
        for name, times in counted.scans.items():
            durations.add_metric([name, "ok"], times.completed, times.completed_seconds)
            durations.add_metric([name, "error"], times.failed, times.failed_seconds)
            if times.last_seconds is not None:
                last.add_metric([name], times.last_seconds)
        yield from (jobs, workers, exceptions, requests, limited, durations, last)


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def counts_from_metrics(text: str) -> dict[str, dict[str, int]]:
    """The database families of a `/metrics` body, parsed with prometheus-client's own
    parser, in the shape of `counts_from_database`."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {name: (key, label) for key, (name, label) in DATABASE_FAMILIES.items()}
    counts: dict[str, dict[str, int]] = {key: {} for key in DATABASE_FAMILIES}
    for family in text_string_to_metric_families(text):
        if family.name not in wanted:
            continue
        key, label = wanted[family.name]
        for sample in family.samples:
            counts[key][sample.labels[label]] = int(sample.value)
    return counts


def exposition(app: Flask, accept: str = "") -> tuple[bytes, str]:
    """The `/metrics` body and its content type: the hub's collector, plus this web
    process's own metrics, or (with PROMETHEUS_MULTIPROC_DIR) every web process's."""
    import os

    from prometheus_client import REGISTRY
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(app))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
