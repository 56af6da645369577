"""Opening a saved helpdesk connection as a connector object."""

from __future__ import annotations

from flask import current_app

from hub.helpdesk import Helpdesk
from hub.helpdesk import HelpdeskContext
from hub.jobs import redis_connection
from hub.models import Connection


class HelpdeskMissing(LookupError):
    """The connection's helpdesk plugin is not installed or is blocked."""


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
