"""Shared fixtures: an app per database backend, a client, a CLI runner, Redis, subprocess env."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from flask_migrate import upgrade
from redis import Redis
from sqlalchemy import create_engine
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from hub.app import create_app
from hub.config import normalise_database_url

ROOT = Path(__file__).resolve().parent.parent
TEST_PLUGINS = Path(__file__).resolve().parent / "plugins"
TEST_SECRET = "test-secret-key-that-is-long-enough"


def postgres_url() -> str:
    """DATABASE_URL when it names PostgreSQL, else the machine's local server."""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgres"):
        return normalise_database_url(url)
    return "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def redis_url() -> str:
    """REDIS_URL when set, else database 15 of the machine's local Redis; under
    pytest-xdist each worker has a database of its own below that one (tests flush it)."""
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    if worker.isdigit() and int(worker) and not url.startswith("unix:"):
        base, _, number = url.rpartition("/")
        if number.isdigit() and base.count("/") >= 2:
            url = f"{base}/{(int(number) - int(worker)) % 16}"
    return url


def wait_for_http(url: str, timeout: float = 30.0) -> None:
    """Wait until something answers HTTP at `url` (any status)."""
    import time

    import requests

    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=5)
            return
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def postgres_schema_url():
    """A PostgreSQL URL whose search_path is a fresh, empty schema (dropped afterwards)."""
    base = postgres_url()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as exc:
        pytest.fail(
            f"PostgreSQL at {engine.url.render_as_string(hide_password=True)} does not answer "
            f"({str(exc).splitlines()[0]}). Start it (see .ci/run) or set DATABASE_URL.",
            pytrace=False,
        )
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with engine.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """An empty database: SQLite in a temp folder, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    return request.getfixturevalue("postgres_schema_url")


@pytest.fixture
def redis_client():
    client = Redis.from_url(redis_url())
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def make_config(tmp_path: Path, database_url: str, **overrides) -> dict:
    config = {
        "TESTING": True,
        "SECRET_KEY": TEST_SECRET,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": redis_url(),
        "INSTANCE_PATH": tmp_path / "instance",
        "HUB_DISABLED_PLUGINS": [],
        "HUB_PLUGINS": [],
        "HUB_WRITEBACK_GRACE": 0,
        # Each app counts sign-in attempts on its own, so tests never share a limit.
        "RATELIMIT_KEY_PREFIX": f"test-{uuid.uuid4().hex}",
    }
    config.update(overrides)
    return config


class MigratedTemplate:
    """The migrated, empty schema made once per test session and copied for each app:
    a file copy for SQLite, the DDL pg_dump wrote for PostgreSQL. Migrating every test's
    database took a fifth of the suite's time; tests/test_migrations.py still migrates
    from scratch, and checks the migrations and the models agree."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._sqlite: Path | None = None
        self._postgres: tuple[str, str] | None = None  # (DDL with a placeholder, head)

    def apply(self, database_url: str) -> None:
        """Give the empty database at `database_url` the migrated schema."""
        if database_url.startswith("sqlite:///"):
            shutil.copyfile(self.sqlite(), database_url.removeprefix("sqlite:///"))
        else:
            ddl, head = self.postgres()
            schema = _schema_of(database_url)
            engine = create_engine(postgres_url(), isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.exec_driver_sql(ddl.replace(_PLACEHOLDER, schema))
                conn.exec_driver_sql(f'INSERT INTO "{schema}".alembic_version VALUES (%s)', (head,))
            engine.dispose()

    def sqlite(self) -> Path:
        if self._sqlite is None:
            path = self.root / "template.db"
            _migrate(self.root, f"sqlite:///{path}")
            self._sqlite = path
        return self._sqlite

    def postgres(self) -> tuple[str, str]:
        if self._postgres is None:
            schema = f"{_PLACEHOLDER}{uuid.uuid4().hex[:8]}"
            base = postgres_url()
            engine = create_engine(base, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            try:
                sep = "&" if "?" in base else "?"
                _migrate(self.root, f"{base}{sep}options=-csearch_path%3D{schema}")
                with engine.connect() as conn:
                    head = conn.execute(text(f'SELECT version_num FROM "{schema}".alembic_version'))
                    head = head.scalar_one()
                url = engine.url.set(drivername="postgresql", password=None)
                env = dict(os.environ)  # a password goes by the environment, never argv
                if engine.url.password:
                    env["PGPASSWORD"] = engine.url.password
                dumped = subprocess.run(
                    ["pg_dump", "--schema-only", "--no-owner", "--no-privileges",
                     f"--schema={schema}", url.render_as_string(hide_password=False)],
                    capture_output=True, text=True, check=True, timeout=120, env=env,
                )  # fmt: skip
            finally:
                with engine.connect() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                engine.dispose()
            lines = [
                line
                for line in dumped.stdout.splitlines()
                # The schema exists already; psql's meta-commands are not SQL.
                if not line.startswith(("CREATE SCHEMA", "\\", "SET ", "SELECT pg_catalog"))
            ]
            self._postgres = ("\n".join(lines).replace(schema, _PLACEHOLDER), head)
        return self._postgres


_PLACEHOLDER = "hub_template_"


def _schema_of(database_url: str) -> str:
    return database_url.rsplit("search_path%3D", 1)[1].split("&")[0]


def _migrate(root: Path, database_url: str) -> None:
    template = create_app(make_config(root, database_url))
    with template.app_context():
        upgrade()
        from hub.extensions import db

        db.session.remove()
        db.engine.dispose()


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory):
    return MigratedTemplate(tmp_path_factory.mktemp("migrated"))


@pytest.fixture
def app(tmp_path, database_url, migrated_template):
    """The hub app on a migrated, empty database."""
    if shutil.which("pg_dump") or database_url.startswith("sqlite"):
        migrated_template.apply(database_url)
        app = create_app(make_config(tmp_path, database_url))
    else:  # no pg_dump here: migrate as the hub does
        app = create_app(make_config(tmp_path, database_url))
        with app.app_context():
            upgrade()
    yield app
    with app.app_context():
        from hub.extensions import db

        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def subprocess_env(tmp_path):
    """Environment for `surveyhub` subprocesses: the venv's binaries and test settings."""
    return subprocess_environment(tmp_path)


def subprocess_environment(folder: Path) -> dict[str, str]:
    """What `subprocess_env` gives, with the instance folder in `folder` (for fixtures
    wider than one test)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HUB_", "PYTEST_")) and key not in {"DATABASE_URL", "REDIS_URL"}
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HUB_INSTANCE_PATH"] = str(folder / "instance")
    env["HUB_SECRET_KEY"] = TEST_SECRET
    env["HUB_BASE_URL"] = "http://127.0.0.1:5000"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class CollectingHandler:
    """An aiosmtpd handler that keeps every message, or answers with a set error."""

    def __init__(self) -> None:
        self.envelopes = []
        self.peers = []
        self.reply = "250 OK"
        self.delay = 0.0  # seconds to hold each message before answering

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            import asyncio

            await asyncio.sleep(self.delay)
        if self.reply.startswith("250"):
            self.envelopes.append(envelope)
            self.peers.append(session.peer)
        return self.reply

    def one_recipient_each(self) -> None:
        """Every survey email went to exactly one address, named alone in To:."""
        for envelope, message in zip(self.envelopes, self.messages, strict=True):
            assert len(envelope.rcpt_tos) == 1, envelope.rcpt_tos
            if message["To"] is not None:
                assert len(message["To"].addresses) == 1, message["To"]

    @property
    def messages(self):
        # Each envelope parsed once: aiosmtpd reads the handler's attributes on every
        # new connection, and parsing all mail each time made big runs quadratic.
        from email import policy
        from email.parser import BytesParser

        parsed = self.__dict__.setdefault("_parsed", [])
        if len(parsed) > len(self.envelopes):  # the list was replaced
            parsed.clear()
        parser = BytesParser(policy=policy.default)
        for envelope in self.envelopes[len(parsed) :]:
            parsed.append(parser.parsebytes(envelope.content))
        return list(parsed)


@pytest.fixture
def smtp_server():
    """A real SMTP server (aiosmtpd) on a free port, collecting what it receives."""
    from aiosmtpd.controller import Controller

    handler = CollectingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller
    with contextlib.suppress(AssertionError):  # a test may have stopped it already
        controller.stop()
    handler.one_recipient_each()  # in every test that sent mail


@pytest.fixture
def mail_app(app, smtp_server):
    """The app, sending through the test SMTP server."""
    app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port)
    return app


def acme_connection():
    """The test helpdesk connection "Acme", made on first use (needs an app context):
    the rows tests add all belong to it, as do the agents of tests/web."""
    from sqlalchemy import select

    from hub.extensions import db
    from hub.models import Connection

    found = db.session.execute(select(Connection).where(Connection.name == "Acme")).scalar()
    if found is None:
        found = Connection(helpdesk="kustomer", name="Acme", settings={})
        db.session.add(found)
        db.session.flush()
    return found


def add_delivery(
    metric: str = "nps",
    scale: int = 11,
    email: str = "jane@example.com",
    locale: str | None = None,
    **settings,
):
    """A survey with one sent delivery (needs an app context)."""
    from hub.extensions import db
    from hub.models import Delivery
    from hub.models import Survey

    connection = acme_connection()
    settings.setdefault("company_name", "Acme")
    survey = Survey(
        connection=connection, metric=metric, scale=scale, name=metric.upper(), settings=settings
    )
    delivery = Delivery(
        survey=survey,
        ticket_id="conv-1",
        requester_email=email,
        requester_name="Jane Doe",
        locale=locale,
        agent_ref="agent-7",
        state="sent",
    )
    db.session.add(delivery)
    db.session.commit()
    return delivery
