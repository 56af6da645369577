"""API: the people who sign in (admins and agents), inviting helpdesk agents, archiving
and restoring them."""

from __future__ import annotations

from flask import g
from flask.views import MethodView
from flask_smorest import abort
from sqlalchemy import select

from hub.agents import archive
from hub.agents import invite_agents
from hub.agents import restore
from hub.api.base import admin_only
from hub.api.base import api_blueprint
from hub.api.connections import connection_or_404
from hub.api.schemas import InvitedSchema
from hub.api.schemas import InviteSchema
from hub.api.schemas import UserSchema
from hub.extensions import db
from hub.models import Role
from hub.models import User

agents = api_blueprint("api_agents", "/api/v1/agents", "Agents")
BLUEPRINTS = (agents,)


def _agent(user_id: int) -> User:
    user = db.session.get(User, user_id)
    if user is None or user.role != Role.AGENT:
        abort(404, message=f"There is no agent {user_id}.")
    return user


@agents.route("")
class Agents(MethodView):
    @agents.response(200, UserSchema(many=True))
    def get(self):
        """Everyone who can sign in or is invited, admins first."""
        admin_only("agents")
        query = select(User).order_by(User.role, User.name, User.email, User.id)
        return db.session.execute(query).scalars().all()


@agents.route("/invite")
class Invite(MethodView):
    @agents.arguments(InviteSchema)
    @agents.response(200, InvitedSchema)
    def post(self, args):
        """Make hub accounts for helpdesk users (ids from the connection's
        helpdesk-users) and email each one not signed up yet a link to set a password
        (a `write` token); 409 when the helpdesk cannot be read."""
        admin_only("agents")
        connection = connection_or_404(args["connection_id"])
        inviter = g.api_user.name or g.api_user.email
        invited = invite_agents(connection, args["helpdesk_user_ids"], inviter)
        if invited.error:
            abort(409, message=f"Could not read the helpdesk's users: {invited.error}")
        return {"invited": invited.users, "failed": invited.failed, "unknown": invited.unknown}


@agents.route("/<int(max=2147483647):user_id>/archive")
class Archive(MethodView):
    @agents.response(200, UserSchema)
    def post(self, user_id: int):
        """Archive an agent: no sign-in, their tokens stop; their ratings stay in every
        report (a `write` token)."""
        admin_only("agents")
        user = _agent(user_id)
        archive(user)
        return user


@agents.route("/<int(max=2147483647):user_id>/restore")
class Restore(MethodView):
    @agents.response(200, UserSchema)
    def post(self, user_id: int):
        """Let an archived agent sign in again (a `write` token)."""
        admin_only("agents")
        user = _agent(user_id)
        restore(user)
        return user
