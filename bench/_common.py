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
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
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


def build_org(conversations: int, seed_value: int = 12):
    """The sandbox's seeded org plus `conversations` resolved email conversations, all
    older than a 48-hour delay and resolved within the last four weeks.

    Customers: 70 % of conversations come from a new customer, 30 % from one seen in the
    last 200 conversations (people write again within days), so the distinct customers
    are about 0.7 x conversations. Returns (seeded, distinct customers of the added ones).
    """
    from surveyhub_kustomer.sandbox.org import seed

    rng = random.Random(seed_value)
    seeded = seed(eligible=0)
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


def make_app(env: dict[str, str]):
    """The hub's app in this process, configured like its workers (migrated)."""
    os.environ.update({k: v for k, v in env.items() if k.startswith("HUB_") or k.endswith("_URL")})
    from flask_migrate import upgrade

    from hub.app import create_app

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
        subprocess.run(args, cwd=ROOT, env=env, stdout=out, stderr=out, check=True, timeout=timeout)
    return time.monotonic() - started, children_cpu() - cpu


def last_ratio(stdout: str) -> float:
    """The ratio a benchmark printed as its last line (`ratio 1.23`)."""
    return float(re.fullmatch(r"ratio ([0-9.]+)", stdout.strip().splitlines()[-1]).group(1))
