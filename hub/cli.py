"""The `surveyhub` command line: run, web, worker, scheduler, plugins, db, rotate-secrets."""

from __future__ import annotations

import os
import sys

import click
from flask.cli import ScriptInfo
from flask.cli import with_appcontext
from flask_migrate.cli import db as db_commands
from sqlalchemy import select

from hub.config import ConfigError
from hub.config import default_instance_path
from hub.config import load_config
from hub.config import load_or_create_secret
from hub.crypto import SecretsUnreadable
from hub.embedded import EmbeddedError
from hub.health import ServiceUnavailable
from hub.pipeline.commands import add_commands as add_pipeline_commands
from hub.registry import PluginError
from hub.registry import Registry

#: Failures that get one clear sentence instead of a traceback.
USER_ERRORS = (ConfigError, PluginError, ServiceUnavailable, EmbeddedError, SecretsUnreadable)


def _create_app():
    from hub.app import create_app

    use_embedded_instance()
    return create_app()


def use_embedded_instance() -> None:
    """Let CLI commands run beside `make run` with nothing exported.

    `surveyhub run` keeps its generated secret key in the instance folder; with no
    HUB_SECRET_KEY set, commands use that key (a new one could not decrypt the stored
    helpdesk keys) and the address `surveyhub run` serves by default. The database and
    Redis already default to the instance's SQLite file and bundled Redis. A production
    setup (DATABASE_URL or REDIS_URL set) never falls back to the development key.
    """
    secret_file = default_instance_path() / "secret_key"
    configured = any(os.environ.get(name) for name in ("DATABASE_URL", "REDIS_URL"))
    if os.environ.get("HUB_SECRET_KEY") or configured or not secret_file.exists():
        return
    os.environ["HUB_SECRET_KEY"] = secret_file.read_text().strip()
    os.environ.setdefault("HUB_BASE_URL", "http://127.0.0.1:5000")


@click.group(help="SurveyHub: helpdesk-triggered NPS, CSAT and CES surveys.")
def cli() -> None:
    pass


cli.add_command(db_commands, "db")
add_pipeline_commands(cli)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address for the web UI.")
@click.option("--port", default=5000, show_default=True, type=int, help="Port for the web UI.")
def run(host: str, port: int) -> None:
    """Start web, worker and scheduler (plus bundled Redis and SQLite when not configured)."""
    from flask_migrate import upgrade

    from hub.app import create_app
    from hub.embedded import Supervisor
    from hub.embedded import free_port
    from hub.embedded import start_child
    from hub.embedded import start_redis
    from hub.extensions import db
    from hub.health import check_database
    from hub.health import check_redis
    from hub.web.auth import admin_exists
    from hub.web.auth import first_admin_url

    instance = default_instance_path()
    os.environ["HUB_INSTANCE_PATH"] = str(instance)
    if not os.environ.get("HUB_SECRET_KEY"):
        os.environ["HUB_SECRET_KEY"] = load_or_create_secret(instance)
    os.environ.setdefault("HUB_BASE_URL", f"http://{host}:{port}")

    supervisor = Supervisor(stop_timeout=load_config(os.environ, instance)["HUB_STOP_TIMEOUT"])
    try:
        if not os.environ.get("REDIS_URL"):
            supervisor.add(start_redis(instance))
            click.echo(f"Started the bundled Redis in {instance / 'redis'}.")
        app = create_app()
        check_database(app)
        check_redis(app)
        with app.app_context():
            click.echo("Applying database migrations...")
            upgrade()
            if not admin_exists():
                link = first_admin_url(app, app.config["HUB_BASE_URL"])
                click.echo(f"\nCreate the first admin account here (one-time link):\n  {link}\n")
            db.engine.dispose()
        env = dict(os.environ)
        if not env.get("HUB_SMTP_HOST"):
            sink_port = free_port()
            outbox = instance / "outbox"
            supervisor.add(start_child("mail sink", ["smtp-sink", "--port", str(sink_port)], env))
            env.update(
                HUB_SMTP_HOST="127.0.0.1",
                HUB_SMTP_PORT=str(sink_port),
                HUB_SMTP_SECURITY="none",
                HUB_OUTBOX_DIR=str(outbox),
            )
            click.echo(f"No HUB_SMTP_HOST: emails go to the Outbox page (kept in {outbox}).")
        supervisor.add(start_child("web", ["web", "--host", host, "--port", str(port)], env))
        supervisor.add(start_child("worker", ["worker"], env))
        supervisor.add(start_child("scheduler", ["scheduler"], env))
        click.echo(f"SurveyHub is starting at {app.config['HUB_BASE_URL']} (Ctrl-C stops it).")
    except BaseException:
        supervisor.stop_all()
        raise
    sys.exit(supervisor.watch())


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
def web(host: str, port: int) -> None:
    """Serve the web UI with the development server (production: `gunicorn wsgi:app`)."""
    from werkzeug.serving import run_simple

    run_simple(host, port, _create_app(), threaded=True, use_reloader=False)


@cli.command()
@click.option("--queue", "queues", multiple=True, help="Queue to listen on (repeatable).")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
def worker(queues: tuple[str, ...], burst: bool) -> None:
    """Run an RQ worker on the hub's queues (start as many as you like)."""
    from hub.health import check_database
    from hub.health import check_redis
    from hub.jobs import QUEUES
    from hub.jobs import run_worker

    # No app context here: each job gets a fresh one in its work horse (HubJob).
    app = _create_app()
    check_database(app)
    check_redis(app)
    run_worker(app, queues or QUEUES, burst=burst)


@cli.command()
@with_appcontext
def scheduler() -> None:
    """Enqueue periodic jobs (run exactly one; a second one waits as a standby)."""
    import signal

    from flask import current_app

    from hub.health import check_redis
    from hub.jobs import configure_job_logging
    from hub.scheduler import Scheduler

    app = current_app._get_current_object()
    check_redis(app)
    configure_job_logging(app.config["HUB_LOG_LEVEL"], app.config["HUB_LOG_FORMAT"])
    runner = Scheduler(app)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: runner.stopping.set())
    click.echo(f"Scheduler started: {', '.join(job.name for job in runner.jobs)}.")
    runner.run()


@cli.command("smtp-sink")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8025, show_default=True, type=int)
def smtp_sink(host: str, port: int) -> None:
    """Accept all email on HOST:PORT and keep it in the outbox folder (for laptops)."""
    import signal
    import threading
    from pathlib import Path

    from hub.smtp_sink import serve

    folder = Path(os.environ.get("HUB_OUTBOX_DIR") or default_instance_path() / "outbox")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    click.echo(f"Mail sink listening on {host}:{port}, keeping messages in {folder}.")
    serve(folder, host, port, stop)


@cli.command()
@click.argument("survey_id", type=int)
@click.option("--html", "as_html", is_flag=True, help="Print the HTML part instead.")
@with_appcontext
def preview(survey_id: int, as_html: bool) -> None:
    """Print the survey email of SURVEY_ID with sample data."""
    from hub.emails import preview_email
    from hub.extensions import db
    from hub.models import Survey

    survey = db.session.get(Survey, survey_id)
    if survey is None:
        raise click.ClickException(f"There is no survey {survey_id}.")
    message = preview_email(survey)
    for header in ("From", "To", "Reply-To", "Subject", "List-Unsubscribe"):
        if message[header]:
            click.echo(f"{header}: {message[header]}")
    click.echo()
    click.echo(message.get_body(("html",) if as_html else ("plain",)).get_content())


@cli.command()
def plugins() -> None:
    """List installed plugins with their version and hooks."""
    for info in _registry().plugins():
        click.echo(
            f"{info.name}  {info.distribution} {info.version}  hooks: {', '.join(info.hooks)}"
        )


@cli.command("admin-link")
@with_appcontext
def admin_link() -> None:
    """Print the one-time link that creates the first admin account."""
    from flask import current_app

    from hub.web.auth import admin_exists
    from hub.web.auth import first_admin_url

    if admin_exists():
        raise click.ClickException("An admin account exists already; sign in instead.")
    app = current_app._get_current_object()
    click.echo(first_admin_url(app, app.config["HUB_BASE_URL"]))


@cli.command("rotate-secrets")
@with_appcontext
def rotate_secrets() -> None:
    """Re-encrypt stored helpdesk secrets under the current HUB_SECRET_KEY."""
    from flask import current_app
    from flask_babel import ngettext

    from hub.extensions import db
    from hub.models import Connection
    from hub.models import HubKey
    from hub.webhooks.models import WebhookSubscription

    vault = current_app.extensions["hub"].vault
    connections = db.session.execute(
        select(Connection).where(Connection.secrets_encrypted.is_not(None))
    ).scalars()
    count = 0
    for connection in connections:
        connection.secrets_encrypted = vault.rotate(connection.secrets_encrypted)
        count += 1
    # The hub's own keys too (the suppression list's hash key): same values, new cipher.
    for key in db.session.execute(select(HubKey)).scalars():
        key.secret_encrypted = vault.rotate(key.secret_encrypted)
    # And the webhooks' signing secrets (receivers keep verifying with the same secret).
    for subscription in db.session.execute(select(WebhookSubscription)).scalars():
        subscription.secret_encrypted = vault.rotate(subscription.secret_encrypted)
    db.session.commit()
    click.echo(
        ngettext(
            "Re-encrypted the secrets of %(num)d connection.",
            "Re-encrypted the secrets of %(num)d connections.",
            count,
        )
    )


def _registry() -> Registry:
    config = load_config(os.environ, default_instance_path())
    return Registry.load(disabled=config["HUB_DISABLED_PLUGINS"], extra=config["HUB_PLUGINS"])


def main() -> None:
    """Entry point of the `surveyhub` console script."""
    try:
        _registry().add_commands(cli)
        cli(obj=ScriptInfo(create_app=_create_app, set_debug_flag=False))
    except USER_ERRORS as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
