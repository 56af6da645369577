"""Helpdesk connections: making one from checked credentials, and opening a saved one
as a connector object."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any

from flask import current_app
from redis.exceptions import RedisError

from hub.crypto import SecretsUnreadable
from hub.extensions import db
from hub.helpdesk import BadCredentials
from hub.helpdesk import ConnectionCheck
from hub.helpdesk import Helpdesk
from hub.helpdesk import HelpdeskContext
from hub.helpdesk import HelpdeskError
from hub.helpdesk import MissingPermission
from hub.jobs import redis_connection
from hub.models import Connection
from hub.models import ConnectionStatus

#: How a connection's status message marks a check's warnings and missing roles.
WARNING_PREFIX = "Warning: "
MISSING_PREFIX = "Missing roles: "


class HelpdeskMissing(LookupError):
    """The connection's helpdesk plugin is not installed or is blocked."""


#: What opening and calling a connection's helpdesk may run into, each with a sentence
#: to show: the helpdesk's own errors, a missing plugin, a refused URL (ValueError), a
#: key the current secret cannot decrypt, Redis (the shared rate budget) away.
TROUBLE = (HelpdeskError, HelpdeskMissing, ValueError, SecretsUnreadable, RedisError)


def open_helpdesk(connection: Connection) -> Helpdesk:
    """The connector for `connection`, with its secrets, shared Redis and URL allow-list."""
    helpdesks = current_app.extensions["hub"].registry.helpdesks
    try:
        connector_class = helpdesks[connection.helpdesk]
    except KeyError:
        raise HelpdeskMissing(
            f"The connection '{connection.name}' uses the helpdesk '{connection.helpdesk}', "
            "which no installed plugin provides (install or unblock it)."
        ) from None
    context = HelpdeskContext(
        name=f"connection-{connection.id}",
        redis=redis_connection(),
        allowed_urls=tuple(current_app.config["HUB_ALLOWED_HELPDESK_URLS"]),
    )
    return connector_class(connection.settings or {}, connection.get_secrets(), context)


def check_message(check: ConnectionCheck) -> str:
    """A connection's status message after a check: the account and key, then one
    "Warning: " line per warning and a "Missing roles: " line (the page highlights both)."""
    lines = [f"Connected to {check.account} with the key '{check.key_name}'."]
    lines += [f"{WARNING_PREFIX}{warning}" for warning in check.warnings]
    if check.missing_roles:
        lines.append(f"{MISSING_PREFIX}{', '.join(check.missing_roles)}")
    return "\n".join(lines)


def first_field(schema: Any, secret: bool) -> str:
    """The name of the schema's first secret field (or first other field): where a
    check's error about the key (or the place) is shown."""
    for name, schema_field in schema.fields.items():
        if bool(schema_field.metadata.get("secret")) == secret:
            return name
    return next(iter(schema.fields), "_")


@dataclass
class Checked:
    """The outcome of checking credentials: a new connection (added to the session, not
    committed) or the reasons keyed by the field they concern; warnings either way."""

    connection: Connection | None
    errors: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def checked_connection(connector_class: type[Helpdesk], values: dict[str, Any]) -> Checked:
    """Check loaded settings and secrets with the helpdesk; only a connection the
    helpdesk accepts, with every role the hub needs, is made."""
    schema = connector_class.settings_schema()
    secret_names = connector_class.secret_fields()
    public = {k: v for k, v in values.items() if k not in secret_names}
    secrets = {k: v for k, v in values.items() if k in secret_names}
    key_field = first_field(schema, secret=True)
    place_field = first_field(schema, secret=False)
    context = HelpdeskContext(allowed_urls=tuple(current_app.config["HUB_ALLOWED_HELPDESK_URLS"]))
    try:
        check = connector_class(public, secrets, context).verify()
    except (BadCredentials, MissingPermission) as exc:
        return Checked(None, {key_field: [str(exc)]})
    except (HelpdeskError, ValueError) as exc:
        return Checked(None, {place_field: [str(exc)]})
    if check.missing_roles:
        return Checked(
            None,
            {
                key_field: [
                    "This key lacks roles the hub needs: "
                    + ", ".join(check.missing_roles)
                    + ". Create a key with these roles and paste it here."
                ]
            },
        )
    connection = Connection(
        helpdesk=connector_class.key,
        name=check.account,
        settings=public,
        status=ConnectionStatus.CONNECTED.value,
        status_message=check_message(check),
    )
    connection.set_secrets(secrets)
    db.session.add(connection)
    return Checked(connection, warnings=list(check.warnings))
