"""Who sees which ratings: admins all; an agent only the ratings attributed to their
helpdesk user id on their own helpdesk connection (ids are unique per account only).
The pages (hub.web.access) and the API (hub.api) both ask here."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import ColumnElement
from sqlalchemy import and_
from sqlalchemy import select

from hub.models import Rating
from hub.models import Survey
from hub.models import User

#: What an agent without a helpdesk id or connection is matched by: nothing. (No
#: helpdesk id looks like this, and it holds no NUL, which PostgreSQL refuses.)
NO_AGENT = "(no helpdesk id)"
NO_CONNECTION = -1


class AgentScope(NamedTuple):
    """The helpdesk user id and connection whose ratings a person sees; both None for
    admins (everything)."""

    agent_ref: str | None
    connection_id: int | None


def agent_scope(user: User) -> AgentScope:
    """Whose ratings `user` sees; an agent missing either half sees none, not all."""
    if user.is_admin:
        return AgentScope(None, None)
    return AgentScope(user.helpdesk_user_id or NO_AGENT, user.connection_id or NO_CONNECTION)


def own_ratings(user: User) -> ColumnElement[bool] | None:
    """A condition on `Rating` for the ratings `user` may see (None: all of them)."""
    scope = agent_scope(user)
    if scope.agent_ref is None:
        return None
    surveys = select(Survey.id).where(Survey.connection_id == scope.connection_id)
    return and_(Rating.agent_ref == scope.agent_ref, Rating.survey_id.in_(surveys))
