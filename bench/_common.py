"""Pieces the pipeline benchmarks share: the Kustomer sandbox in its own process, an SMTP
sink, a private Redis, a fresh PostgreSQL schema and a configured hub.

The sandbox runs in a subprocess (`bench/_sandbox.py`), so its CPU and memory never count
as the hub's; the SMTP sink runs in the benchmark's own process, which only waits while
the hub or a baseline works.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import resource
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import requests
from aiosmtpd.controller import Controller
from sqlalchemy import create_engine
from sqlalchemy import text

from hub.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
MIB = 1024 * 1024
#: A customer comes back with this probability, within the last `RECENT` conversations.
REPEAT_SHARE = 0.3
RECENT = 200


def build_org(conversations: int, seed_value: int = 12, now=None):
    """The sandbox's seeded org plus `conversations` resolved email conversations, all
    older than a 48-hour delay and resolved within the last four weeks.

    Customers: 70 % of conversations come from a new customer, 30 % from one seen in the
    last 200 conversations (people write again within days), so the distinct customers
    are about 0.7 x conversations. Returns (seeded, distinct customers of the added ones).
    """
    from surveyhub_kustomer.sandbox.org import seed

    rng = random.Random(seed_value)
    seeded = seed(now=now, eligible=0)
    org = seeded.org
    agent = next(iter(org.users))
    people: list[str] = []
    for n in range(conversations):
        if people and rng.random() < REPEAT_SHARE:
            person = people[-rng.randint(1, min(RECENT, len(people)))]
        else:
            person = org.add_customer(f"P{n}", [f"p{n}@example.com"])
            people.append(person)
        ago = timedelta(hours=50) + timedelta(days=26) * (conversations - n) / max(1, conversations)
        org.add_conversation(person, assignee=agent, updated_ago=ago, resolved_ago=ago)
    return seeded, len(people)


class CountingSink:
    """An SMTP server that accepts and counts (and keeps the size of the last message)."""

    def __init__(self) -> None:
        self.count = 0
        self.last_size = 0

    async def handle_DATA(self, server, session, envelope) -> str:
        self.count += 1
        self.last_size = len(envelope.content)
        return "250 OK"


@contextlib.contextmanager
def smtp_sink() -> Iterator[tuple[CountingSink, int]]:
    sink = CountingSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield sink, controller.port
    finally:
        controller.stop()


@dataclass
class Sandbox:
    url: str
    api_key: str
    info: dict[str, Any]
    process: subprocess.Popen

    def counts(self) -> dict[str, int]:
        return requests.get(f"{self.url}/__sandbox/bench-counts", timeout=30).json()

    def reset_counts(self) -> None:
        requests.post(f"{self.url}/__sandbox/reset-counts", timeout=30).raise_for_status()


@contextlib.contextmanager
def sandbox(conversations: int, fast_search: bool = False, open_ones: int = 0) -> Iterator[Sandbox]:
    """The Kustomer sandbox over HTTP in its own process, seeded by `build_org`."""
    args = [
        sys.executable,
        str(BENCH / "_sandbox.py"),
        str(conversations),
        "--open",
        str(open_ones),
    ]
    if fast_search:
        args.append("--fast-search")
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("The sandbox did not start")
        info = json.loads(line)
        yield Sandbox(info["url"], info["api_key"], info, process)
    finally:
        process.terminate()
        process.wait(30)


#: As given when the benchmark started (`make_app` points DATABASE_URL at its schema).
_DATABASE_URL = os.environ.get("DATABASE_URL", "")


def wait_for(url: str, timeout: float = 60) -> None:
    """Wait until something answers HTTP at `url` (any status)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=5)
            return
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def postgres_base() -> str:
    url = _DATABASE_URL
    if url.startswith("postgres"):
        return url.replace("postgresql://", "postgresql+psycopg://", 1)
    return "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL whose search_path is a fresh, empty schema (dropped afterwards)."""
    base = postgres_base()
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A private redis-server on a unix socket; its URL."""
    from hub.config import embedded_redis_socket
    from hub.embedded import start_redis

    child = start_redis(workdir)
    try:
        yield f"unix://{embedded_redis_socket(workdir)}"
    finally:
        child.process.terminate()
        child.process.wait(10)


def hub_env(
    workdir: Path, database_url: str, redis_url: str, sandbox_url: str, smtp_port: int, **extra
) -> dict[str, str]:
    """The environment of the hub's processes (and of the benchmark's own app)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("HUB_") and key not in {"DATABASE_URL", "REDIS_URL"}
    }
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        HUB_SECRET_KEY=secrets.token_urlsafe(48),
        HUB_INSTANCE_PATH=str(workdir / "instance"),
        HUB_BASE_URL="http://127.0.0.1:5000",
        HUB_ALLOWED_HELPDESK_URLS=sandbox_url,
        HUB_SMTP_HOST="127.0.0.1",
        HUB_SMTP_PORT=str(smtp_port),
        HUB_WRITEBACK_GRACE="0",
        PYTHONUNBUFFERED="1",
    )
    env.update({key: str(value) for key, value in extra.items()})
    return env


#: make_app sets this process's environment and runs Alembic, whose context is global:
#: one app at a time (a benchmark may run two stacks side by side in threads).
_MAKING_APP = threading.Lock()


def make_app(env: dict[str, str]):
    """The hub's app in this process, configured like its workers (migrated)."""
    from flask_migrate import upgrade

    from hub.app import create_app

    with _MAKING_APP:
        os.environ.update(
            {k: v for k, v in env.items() if k.startswith("HUB_") or k.endswith("_URL")}
        )
        app = create_app()
        with app.app_context():
            upgrade()
    return app


def add_survey(
    app, sandbox_url: str, api_key: str, metric: str = "csat", lookback_days: int = 30, **settings
) -> tuple[int, int]:
    """One Kustomer connection and one active survey on it; (connection id, survey id).

    Activation enqueues the first scan (it waits on the `scans` queue for a worker).
    """
    from hub.extensions import db
    from hub.models import Connection
    from hub.models import Survey
    from hub.pipeline.activation import activate

    scales = {"nps": 11, "csat": 3, "ces": 7}
    with app.app_context():
        connection = Connection(helpdesk="kustomer", name="Bench", settings={"url": sandbox_url})
        connection.set_secrets({"api_key": api_key})
        db.session.add(connection)
        db.session.commit()
        survey = Survey(
            connection_id=connection.id,
            metric=metric,
            scale=scales[metric],
            name=metric,
            settings={"company_name": "Acme", **settings},
        )
        db.session.add(survey)
        db.session.commit()
        activate(survey, lookback_days=lookback_days)
        return connection.id, survey.id


def children_cpu() -> float:
    """CPU seconds of this process's finished (waited-for) descendants so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(args: list[str], env: dict[str, str], log: Path, timeout: float = 3600):
    """Run a process to its end; (wall seconds, CPU seconds of it and its children)."""
    cpu = children_cpu()
    started = time.monotonic()
    with log.open("ab") as out:
        done = subprocess.run(args, cwd=ROOT, env=env, stdout=out, stderr=out, timeout=timeout)
    if done.returncode:  # the log goes with the benchmark's temporary directory: show it
        tail = log.read_text(errors="replace")[-6000:]
        raise RuntimeError(f"{args[0]} exited with {done.returncode}; its log ends:\n{tail}")
    return time.monotonic() - started, children_cpu() - cpu


def last_ratio(stdout: str) -> float:
    """The ratio a benchmark printed as its last line (`ratio 1.23`)."""
    return float(re.fullmatch(r"ratio ([0-9.]+)", stdout.strip().splitlines()[-1]).group(1))


# -- a hub full of ratings, served by gunicorn -------------------------------------------

#: What customers write (a rating's comment is one of these and its number).
COMMENTS = (
    "Quick and friendly help, thank you!",
    "Solved on the first reply.",
    "Took three emails to understand my question.",
    "Great support as always",
    "The answer was correct but it took two days.",
    "Very patient with me, thanks.",
    "I had to explain everything again to a second agent.",
    "Perfect.",
)
#: Skip reasons of the deliveries that got no email, the common ones repeated.
SKIPS = (
    "cooldown", "cooldown", "cooldown", "wrong channel", "wrong channel",
    "no human assignee", "updated within the delay", "not resolved", "excluded tag",
    "unsubscribed", "surveyed by the helpdesk", "started by an agent", "no email",
    "invalid email", "ticket deleted",
)  # fmt: skip
#: Answers per scale, skewed to the top as real ones are: the value of a rating is
#: picked from its scale's list by a hash of its id and its agent.
ANSWERS = {
    11: (10, 10, 10, 10, 10, 9, 9, 9, 9, 8, 8, 8, 7, 7, 6, 5, 4, 3, 1, 0),
    7: (7, 7, 7, 7, 6, 6, 6, 6, 6, 5, 5, 5, 5, 4, 4, 4, 3, 2, 2, 1),
    5: (5, 5, 5, 5, 5, 5, 5, 5, 4, 4, 4, 4, 4, 3, 3, 3, 2, 2, 1, 1),
    3: (3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1),
    2: (2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1),
}


def _rated(n: str) -> str:
    """SQL: delivery `n` was rated."""
    return (
        f"({n} * CAST(:ratings AS bigint)) / :total > ({n} - 1) * CAST(:ratings AS bigint) / :total"
    )


# Delivery n of `total` (ids in time order, as the hub writes them): its moment `at` moves
# evenly through the last `days` days; `ratings` of them, evenly spread, were rated (the
# rating's id is n * ratings / total); independent hashes of n pick its survey from the
# list `surveys` (repeat an id to weight it), its agent (every 97th has none) and, for an
# unrated one, its state.
_ROWS = f"""
    SELECT n, survey, agent, {_rated("n")} AS rated,
           now() - interval '6 hours' - CAST(:days AS float8) * interval '1 day'
                 * ((:total - n) / CAST(:total AS float8)) AS at
    FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS n,
         LATERAL (SELECT CAST(:surveys AS int[]) AS surveys) AS given,
         LATERAL (SELECT surveys[1 + abs(hashint8extended(n, 1)) % cardinality(surveys)]
                             AS survey,
                         CASE WHEN abs(hashint8extended(n, 3)) % 97 = 0 THEN NULL
                              ELSE 'agent-' || abs(hashint8extended(n, 2)) % CAST(:agents AS int)
                         END AS agent) AS pick
"""
_DELIVERIES = text(
    f"""
    INSERT INTO deliveries (id, survey_id, ticket_id, requester_email, requester_name,
        agent_ref, state, skip_reason, error, attempts, resolved_at, ticket_updated_at,
        sent_at, opened_at, created_at, updated_at)
    SELECT n, survey, 'T' || n, 'customer' || n || '@example.com', 'Customer ' || n, agent,
           state, CASE WHEN state = 'skipped' THEN
                (CAST(:skips AS text[]))[1 + k % cardinality(CAST(:skips AS text[]))] END,
           CASE WHEN state = 'failed' THEN '550 5.1.1 mailbox unavailable' ELSE '' END,
           CASE WHEN state IN ('skipped', 'pending') THEN 0 ELSE 1 END,
           at - interval '49 hours', at - interval '49 hours',
           CASE WHEN state = 'sent' THEN at END,
           CASE WHEN state = 'sent' AND (rated AND k % 10 <> 0 OR k < 25)
                THEN at + interval '5 minutes' END,
           at - interval '1 hour', at
    FROM ({_ROWS}) AS r,
         LATERAL (SELECT abs(hashint8extended(n, 5)) % 100 AS k) AS hashed,
         LATERAL (SELECT CASE WHEN rated OR k < 55 THEN 'sent'
                              WHEN k < 85 THEN 'skipped' WHEN k < 92 THEN 'failed'
                              WHEN k < 95 THEN 'pending' WHEN k < 97 THEN 'unknown'
                              ELSE 'cancelled' END AS state) AS decided
    """
)
# A rating's value: its scale's list at a hash of its id, pushed towards the low end by
# up to 3 places for some agents (so agents' scores differ).
_RATINGS = text(
    f"""
    INSERT INTO ratings (id, delivery_id, survey_id, agent_ref, value, scale, comment,
        commented_at, suspected_scanner, created_at, updated_at)
    SELECT (d.id * CAST(:ratings AS bigint)) / :total, d.id, d.survey_id, d.agent_ref,
           (CASE s.scale WHEN 11 THEN CAST(:a11 AS int[]) WHEN 7 THEN CAST(:a7 AS int[])
                         WHEN 5 THEN CAST(:a5 AS int[]) WHEN 3 THEN CAST(:a3 AS int[])
                         ELSE CAST(:a2 AS int[]) END)
               [1 + least(19, abs(hashint8extended(d.id, 6)) % 20
                              + abs(hashtext(coalesce(d.agent_ref, ''))) % 4)],
           s.scale,
           CASE WHEN commented THEN (CAST(:comments AS text[]))
                    [1 + d.id % cardinality(CAST(:comments AS text[]))] || ' #' || d.id
                ELSE '' END,
           CASE WHEN commented AND d.id % 2 = 0
                THEN d.sent_at + (d.id % 240 + 3) * interval '1 minute' END,
           abs(hashint8extended(d.id, 8)) % 50 = 3,
           d.sent_at + (d.id % 240) * interval '1 minute',
           d.sent_at + (d.id % 240) * interval '1 minute'
    FROM deliveries d JOIN surveys s ON s.id = d.survey_id,
         LATERAL (SELECT abs(hashint8extended(d.id, 7)) % 10 < 3 AS commented) AS c
    WHERE d.id BETWEEN :first AND :last AND {_rated("d.id")}
    """
)


def load_ratings(
    url: str,
    surveys: Sequence[int],
    ratings: int,
    *,
    unrated: int = 0,
    days: float = 120,
    agents: int = 40,
    batch: int = 500_000,
) -> None:
    """Fill the (migrated, empty) hub at `url` by SQL: `ratings` rated survey emails and
    `unrated` other deliveries (sent without an answer, skipped for a reason, failed,
    pending...), spread over `surveys` (repeat an id to weight it), `agents` agents and
    the last `days` days, like real data: answers skewed to the top and differing per
    agent, 30 % with a comment, 2 % suspected scanner clicks, most sent emails opened.
    Then VACUUM ANALYZE, as autovacuum would have done on a live database."""
    engine = create_engine(url)
    total = ratings + unrated
    common = {"surveys": list(surveys), "agents": agents, "days": days, "ratings": ratings,
              "total": total}  # fmt: skip
    answers = {f"a{scale}": list(values) for scale, values in ANSWERS.items()}
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
        # Indexes and constraints are built once at the end (their checks included), not
        # row by row: several times faster.
        tables = "('deliveries'::regclass, 'ratings'::regclass)"
        constraints = conn.execute(
            text(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
                f"FROM pg_constraint WHERE conrelid IN {tables} AND contype <> 'p' "
                "ORDER BY contype <> 'u', conname"  # unique first: foreign keys need them
            )
        ).all()
        for table, name, _ in reversed(constraints):
            conn.execute(text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
        indexes = conn.execute(
            text(
                "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) "
                f"FROM pg_index WHERE indrelid IN {tables} AND NOT indisprimary"
            )
        ).all()
        for name, _ in indexes:
            conn.execute(text(f"DROP INDEX {name}"))
        for first in range(1, total + 1, batch):
            last = min(total, first + batch - 1)
            conn.execute(
                _DELIVERIES, {**common, "first": first, "last": last, "skips": list(SKIPS)}
            )
        for first in range(1, total + 1, batch):
            last = min(total, first + batch - 1)
            conn.execute(
                _RATINGS,
                {**answers, "comments": list(COMMENTS), "agents": agents, "ratings": ratings,
                 "total": total, "first": first, "last": last},
            )  # fmt: skip
        for _, definition in indexes:
            conn.execute(text(definition))
        for table, name, definition in constraints:
            conn.execute(text(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'))
        for table in ("deliveries", "ratings"):
            conn.execute(text(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE deliveries"))
        conn.execute(text("VACUUM ANALYZE ratings"))
    engine.dispose()


def bench_app(url: str, workdir: Path, **extra: str):
    """The hub's app in this process on `url` (migrated), and the environment its
    gunicorn gets (a fresh secret key; `extra` added)."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "HUB_SECRET_KEY": secrets.token_urlsafe(48),
        "HUB_INSTANCE_PATH": str(workdir / "instance"),
        "HUB_BASE_URL": "http://127.0.0.1",
        **extra,
    }
    return make_app(env), env


@contextlib.contextmanager
def gunicorn(env: dict[str, str], log: Path, timeout: int = 900) -> Iterator[tuple[str, int]]:
    """The hub under gunicorn with one sync worker, as production runs it; yields its
    base URL and the worker's pid. Its output goes to `log`."""
    port = free_port()
    with log.open("ab") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "--workers", "1",
             "--timeout", str(timeout), "--bind", f"127.0.0.1:{port}", "wsgi:app"],
            cwd=ROOT, env=env, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/healthz")
        import psutil

        yield base, psutil.Process(server.pid).children()[0].pid
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
