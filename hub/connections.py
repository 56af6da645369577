"""Opening a saved helpdesk connection as a connector object."""

from __future__ import annotations

from flask import current_app
from redis.exceptions import RedisError

from hub.crypto import SecretsUnreadable
from hub.helpdesk import Helpdesk
from hub.helpdesk import HelpdeskContext
from hub.helpdesk import HelpdeskError
from hub.jobs import redis_connection
from hub.models import Connection


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
