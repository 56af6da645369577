"""Command-line access to the pipeline: connect, create surveys, activate, scan, inspect."""

from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext
from sqlalchemy import select


def _pairs(values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep:
            raise click.BadParameter(f"'{value}' is not KEY=VALUE")
        pairs[key.strip()] = rest
    return pairs


def _sentence(errors: dict, schema, flag: str = "--setting") -> str:
    """Marshmallow's error dict as sentences that name the fields as the form does."""
    parts = []
    for name, messages in errors.items():
        field = schema.fields.get(name)
        label = (field.metadata.get("label") if field else None) or name
        text = (
            " ".join(str(m) for m in messages)
            if isinstance(messages, list)
            else "; ".join(f"{key}: {value}" for key, value in messages.items())
            if isinstance(messages, dict)
            else str(messages)
        )
        option = f"{flag} {name}=…" if field and not field.metadata.get("secret") else name
        parts.append(f"{label} ({option}): {text}")
    return "Invalid settings. " + " ".join(parts)


def add_commands(cli: click.Group) -> None:
    """Add the pipeline's commands to the `surveyhub` group."""

    @cli.command()
    @click.argument("helpdesk")
    @click.option("--name", required=True, help="A name for this connection.")
    @click.option("--setting", "settings", multiple=True, help="KEY=VALUE (repeatable).")
    @click.option(
        "--secret-file",
        "secret_files",
        multiple=True,
        help="FIELD=PATH: read a secret (the API key) from a file.",
    )
    @click.option("--force", is_flag=True, help="Save even when roles are missing.")
    @with_appcontext
    def connect(
        helpdesk: str,
        name: str,
        settings: tuple[str, ...],
        secret_files: tuple[str, ...],
        force: bool,
    ) -> None:
        """Check a helpdesk's credentials and save the connection (secrets are encrypted).

        Secrets (the API key) are never taken from the command line, where `ps` and the
        shell history show them: type them at the hidden prompt, pipe them on standard
        input (one per line), or name a file with --secret-file.
        """
        from flask import current_app

        from hub.extensions import db
        from hub.helpdesk import HelpdeskContext
        from hub.helpdesk import HelpdeskError
        from hub.models import Connection
        from hub.models import ConnectionStatus

        registry = current_app.extensions["hub"].registry
        if helpdesk not in registry.helpdesks:
            known = ", ".join(sorted(registry.helpdesks)) or "none installed"
            raise click.ClickException(f"No helpdesk plugin '{helpdesk}' (known: {known}).")
        connector_class = registry.helpdesks[helpdesk]
        given = _pairs(settings)
        schema = connector_class.settings_schema()
        secret_names = connector_class.secret_fields()
        unknown = sorted(set(given) - set(schema.fields))
        if unknown:
            raise click.ClickException(
                f"{helpdesk} has no setting {unknown[0]!r}; its settings are: "
                f"{', '.join(schema.fields)}."
            )
        on_command_line = [name for name in secret_names if name in given]
        if on_command_line:
            # Arguments show up in `ps` and shell history.
            raise click.ClickException(
                f"Do not put {on_command_line[0]} on the command line: leave it out and type "
                "it at the prompt, or pipe it on standard input."
            )
        errors = schema.validate(given, partial=tuple(secret_names))
        if errors:
            raise click.ClickException(_sentence(errors, schema))
        from_files = _pairs(secret_files)
        for field, path in from_files.items():
            if field not in secret_names:
                raise click.ClickException(f"{field} is not a secret of {helpdesk}.")
            try:
                given[field] = open(path, encoding="utf-8").read().strip()  # noqa: SIM115
            except OSError as exc:
                raise click.ClickException(f"Cannot read {path}: {exc.strerror}.") from exc
        piped = not sys.stdin.isatty()
        for field in secret_names:
            if field in given:
                continue
            label = schema.fields[field].metadata.get("label") or field.replace("_", " ")
            if piped:  # getpass would read the terminal, not the pipe
                given[field] = sys.stdin.readline().strip()
            else:
                given[field] = click.prompt(label, hide_input=True).strip()
        errors = schema.validate(given)
        if errors:
            raise click.ClickException(_sentence(errors, schema))
        public = {k: v for k, v in given.items() if k not in secret_names}
        secrets = {k: v for k, v in given.items() if k in secret_names}
        context = HelpdeskContext(
            allowed_urls=tuple(current_app.config["HUB_ALLOWED_HELPDESK_URLS"])
        )
        try:
            check = connector_class(public, secrets, context).verify()
        except (HelpdeskError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"Connected to {check.account} with the key '{check.key_name}'.")
        for warning in check.warnings:
            click.echo(f"Warning: {warning}")
        if check.missing_roles:
            click.echo("Missing roles: " + ", ".join(check.missing_roles))
            if not force:
                raise click.ClickException("Create a key with these roles, or use --force.")
        connection = Connection(
            helpdesk=helpdesk,
            name=name,
            settings=public,
            status=ConnectionStatus.CONNECTED.value,
        )
        connection.set_secrets(secrets)
        db.session.add(connection)
        db.session.commit()
        click.echo(f"Saved connection {connection.id}.")

    @cli.group()
    def survey() -> None:
        """Create and list surveys."""

    @survey.command("create")
    @click.option("--connection", "connection_id", type=int, required=True)
    @click.option("--metric", required=True, help="nps, csat, ces, or a plugin's metric.")
    @click.option("--scale", type=int, help="Number of points (CSAT: 2, 3 or 5).")
    @click.option("--name")
    @click.option("--set", "values", multiple=True, help="Trigger setting KEY=VALUE.")
    @with_appcontext
    def create_survey(connection_id, metric, scale, name, values) -> None:
        """Create an inactive survey (see docs/surveys.md for its settings)."""
        import json

        from flask import current_app
        from marshmallow import ValidationError

        from hub.extensions import db
        from hub.models import Connection
        from hub.models import Survey
        from hub.surveys import SurveySettingsSchema

        metrics = current_app.extensions["hub"].registry.metrics
        if metric not in metrics:
            raise click.ClickException(f"No metric '{metric}' (known: {', '.join(metrics)}).")
        if db.session.get(Connection, connection_id) is None:
            raise click.ClickException(f"There is no connection {connection_id}.")
        scale = scale or metrics[metric].default_scale
        if scale not in metrics[metric].scales:
            raise click.ClickException(f"{metric} offers scales {metrics[metric].scales}.")
        settings = {}
        known = SurveySettingsSchema().fields
        for key in _pairs(values):
            if key not in known:
                raise click.ClickException(
                    f"There is no setting {key!r}. The settings are: {', '.join(known)}."
                )
        for key, raw in _pairs(values).items():
            try:
                settings[key] = json.loads(raw)
            except ValueError:
                settings[key] = raw
        try:
            settings = SurveySettingsSchema().load(settings)
        except ValidationError as exc:
            raise click.ClickException(
                _sentence(exc.messages, SurveySettingsSchema(), "--set")
            ) from exc
        survey = Survey(
            connection_id=connection_id,
            metric=metric,
            scale=scale,
            name=name or metrics[metric].title,
            settings=settings,
        )
        db.session.add(survey)
        db.session.commit()
        click.echo(f"Created survey {survey.id} ({metric}, {scale} points, inactive).")

    @survey.command("list")
    @with_appcontext
    def list_surveys() -> None:
        """Every survey: id, name, metric, helpdesk connection and state."""
        from hub.extensions import db
        from hub.models import Survey

        surveys = db.session.execute(select(Survey).order_by(Survey.id)).scalars().all()
        if not surveys:
            click.echo("No surveys yet: create one with `surveyhub survey create`.")
        for item in surveys:
            state = "active" if item.active else "inactive"
            last = item.last_scan_at.strftime("%Y-%m-%d %H:%M") if item.last_scan_at else "never"
            click.echo(
                f"{item.id:>4}  {item.name}  {item.metric}  "
                f"{item.connection.helpdesk}:{item.connection.name}  {state}  last scan {last}"
                + (f"  error: {item.last_scan_error}" if item.last_scan_error else "")
            )

    @cli.command()
    @click.argument("survey_id", type=int)
    @click.option("--lookback-days", default=0, show_default=True, type=int)
    @with_appcontext
    def activate(survey_id: int, lookback_days: int) -> None:
        """Prepare the helpdesk and start surveying tickets resolved from now on."""
        from hub.pipeline.activation import ActivationFailed
        from hub.pipeline.activation import activate as activate_survey

        try:
            activate_survey(_survey(survey_id), lookback_days)
        except ActivationFailed as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"Survey {survey_id} is active.")

    @cli.command()
    @click.argument("survey_id", type=int)
    @with_appcontext
    def deactivate(survey_id: int) -> None:
        """Stop scanning and cancel deliveries not sent yet."""
        from flask_babel import ngettext

        from hub.pipeline.activation import deactivate as deactivate_survey

        cancelled = deactivate_survey(_survey(survey_id))
        click.echo(
            f"Survey {survey_id} is inactive; "
            + ngettext(
                "%(num)d unsent delivery cancelled.",
                "%(num)d unsent deliveries cancelled.",
                cancelled,
            )
        )

    @cli.command()
    @click.argument("survey_id", type=int)
    @click.option("--dry-run", is_flag=True, help="Only show what would be decided.")
    @click.option(
        "--lookback-days", default=0, type=int, help="With --dry-run: tickets resolved in N days."
    )
    @with_appcontext
    def scan(survey_id: int, dry_run: bool, lookback_days: int) -> None:
        """Scan the helpdesk now (with --dry-run: list each ticket's decision)."""
        from hub.pipeline.scan import scan_survey

        survey = _survey(survey_id)
        if not survey.active and not dry_run:
            raise click.ClickException("The survey is not active (use --dry-run to preview).")
        seen = 0

        def show(ticket, reason):
            nonlocal seen
            seen += 1
            if dry_run:
                decision = f"skip: {reason}" if reason else "send"
                email = ticket.requester_email or "-"
                click.echo(f"{ticket.id}  {email}  {decision}")
            elif seen % 100 == 0:
                click.echo(f"… {seen} tickets", err=True)

        report = scan_survey(
            survey_id, dry_run=dry_run, on_decision=show, lookback_days=lookback_days
        )
        if report.locked:
            raise click.ClickException(
                "Another scan of this survey's connection is running; try again when it ends."
            )
        verb = "would send" if dry_run else "pending"
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(report.skipped.items()))
        click.echo(
            f"{report.seen} tickets: {report.pending} {verb}, "
            f"{sum(report.skipped.values())} skipped ({skipped or 'none'}), "
            f"{report.already} already surveyed."
        )

    @cli.command()
    @click.argument("survey_id", type=int)
    @click.option("--state", help="Only this state (pending, skipped, sent, unknown, …).")
    @with_appcontext
    def deliveries(survey_id: int, state: str | None) -> None:
        """The deliveries log: each ticket's state and, for skips and failures, why."""
        from hub.extensions import db
        from hub.models import Delivery

        query = select(Delivery).where(Delivery.survey_id == survey_id).order_by(Delivery.id)
        if state:
            query = query.where(Delivery.state == state)
        for delivery in db.session.execute(query).scalars():
            why = delivery.skip_reason or delivery.error or ""
            click.echo(
                f"{delivery.ticket_id}  {delivery.requester_email or '-'}  {delivery.state}"
                + (f"  ({why})" if why else "")
            )

    @cli.command("write-backs")
    @click.option("--state", help="Only this state (pending, running, done, failed).")
    @click.option("--retry", "retry_id", type=int, help="Retry this failed write-back now.")
    @with_appcontext
    def write_backs(state: str | None, retry_id: int | None) -> None:
        """Write-backs to the helpdesk with their state and last error; retry on demand."""
        from hub.extensions import db
        from hub.models import WriteBack
        from hub.pipeline.writeback import retry_write_back

        if retry_id is not None:
            if not retry_write_back(retry_id):
                raise click.ClickException(f"Write-back {retry_id} is not failed or pending.")
            click.echo(f"Write-back {retry_id} will be retried.")
            return
        query = select(WriteBack).order_by(WriteBack.id)
        if state:
            query = query.where(WriteBack.state == state)
        for item in db.session.execute(query).scalars():
            error = f"  ({item.last_error})" if item.last_error else ""
            click.echo(
                f"{item.id}  rating {item.rating_id}  {item.kind}  {item.state}  "
                f"attempts {item.attempts}{error}"
            )


def _survey(survey_id: int):
    from hub.extensions import db
    from hub.models import Survey

    survey = db.session.get(Survey, survey_id)
    if survey is None:
        raise click.ClickException(f"There is no survey {survey_id}.")
    return survey
