"""API: helpdesks one can connect, helpdesk connections (made only with credentials the
helpdesk accepts; secrets are write-only) and a connection's helpdesk users."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import ValidationError
from sqlalchemy import select

from hub.agents import helpdesk_agents
from hub.api.base import admin_only
from hub.api.base import api_blueprint
from hub.api.schemas import ConnectionCreateSchema
from hub.api.schemas import ConnectionSchema
from hub.api.schemas import HelpdeskSchema
from hub.api.schemas import HelpdeskUserSchema
from hub.connections import checked_connection
from hub.extensions import db
from hub.models import Connection

connections = api_blueprint("api_connections", "/api/v1/connections", "Connections")
helpdesks = api_blueprint("api_helpdesks", "/api/v1/helpdesks", "Helpdesks")
BLUEPRINTS = (helpdesks, connections)


def connection_out(connection: Connection) -> dict[str, Any]:
    """A connection as the API gives it: never its secrets (they are not even decrypted)."""
    return {
        "id": connection.id,
        "helpdesk": connection.helpdesk,
        "name": connection.name,
        "settings": dict(connection.settings or {}),
        "status": connection.status,
        "status_message": connection.status_message or "",
        "created_at": connection.created_at,
    }


def connection_or_404(connection_id: int) -> Connection:
    """The connection, or a 404 problem."""
    connection = db.session.get(Connection, connection_id)
    if connection is None:
        abort(404, message=f"There is no connection {connection_id}.")
    return connection


@helpdesks.route("")
class Helpdesks(MethodView):
    @helpdesks.response(200, HelpdeskSchema(many=True))
    def get(self):
        """The helpdesks the installed plugins connect to, with their connection fields
        (`secret` ones are write-only)."""
        admin_only("helpdesks")
        found = current_app.extensions["hub"].registry.helpdesks
        return [
            {
                "key": key,
                "title": connector.title,
                "fields": [
                    {
                        "name": name,
                        "label": field.metadata.get("label", name),
                        "secret": bool(field.metadata.get("secret")),
                        "required": field.required,
                        "help": field.metadata.get("help", ""),
                    }
                    for name, field in connector.settings_schema().fields.items()
                ],
            }
            for key, connector in sorted(found.items())
        ]


@connections.route("")
class Connections(MethodView):
    @connections.response(200, ConnectionSchema(many=True))
    def get(self):
        """Every helpdesk connection (without secrets)."""
        admin_only("connections")
        found = db.session.execute(select(Connection).order_by(Connection.id)).scalars()
        return [connection_out(connection) for connection in found]

    @connections.arguments(ConnectionCreateSchema)
    @connections.response(201, ConnectionSchema)
    def post(self, args):
        """Connect a helpdesk (a `write` token): the settings are validated by the
        plugin's schema and the credentials checked with the helpdesk at once; nothing
        is saved unless the helpdesk accepts them with every role the hub needs (422
        with the reason under the field it concerns)."""
        admin_only("connections")
        connector = current_app.extensions["hub"].registry.helpdesks.get(args["helpdesk"])
        if connector is None:
            abort(
                422,
                message="Unknown helpdesk.",
                errors={"helpdesk": [f"No installed plugin connects to '{args['helpdesk']}'."]},
            )
        try:
            values = connector.settings_schema().load(args["settings"])
        except ValidationError as exc:
            abort(422, message="Some settings are not valid.", errors={"settings": exc.messages})
        checked = checked_connection(connector, values)
        if checked.connection is None:
            db.session.rollback()
            abort(422, message="The helpdesk refused.", errors={"settings": checked.errors})
        db.session.commit()
        return connection_out(checked.connection)


@connections.route("/<int(max=2147483647):connection_id>")
class OneConnection(MethodView):
    @connections.response(200, ConnectionSchema)
    def get(self, connection_id: int):
        """One connection (without secrets)."""
        admin_only("connections")
        return connection_out(connection_or_404(connection_id))


@connections.route("/<int(max=2147483647):connection_id>/helpdesk-users")
class HelpdeskUsers(MethodView):
    @connections.response(200, HelpdeskUserSchema(many=True))
    def get(self, connection_id: int):
        """The helpdesk's human users, each with their hub account if they have one
        (invite them with POST /agents/invite); 409 when the helpdesk cannot be read."""
        admin_only("connections")
        rows, error = helpdesk_agents(connection_or_404(connection_id))
        if error:
            abort(409, message=f"Could not read the helpdesk's users: {error}")
        return [
            {
                "id": row.id,
                "name": row.name,
                "email": row.email,
                "account_id": row.account.id if row.account else None,
            }
            for row in rows
        ]
