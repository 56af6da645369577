"""Who sees which ratings: admins all; an agent only the ratings attributed to their
helpdesk user id on their own helpdesk connection (ids are unique per account only)."""

from __future__ import annotations

from sqlalchemy import ColumnElement
from sqlalchemy import and_
from sqlalchemy import false
from sqlalchemy import select

from hub.models import Rating
from hub.models import Survey
from hub.models import User


def own_ratings(user: User) -> ColumnElement[bool] | None:
    """A condition on `Rating` for the ratings `user` may see (None: all of them). An
    agent without a helpdesk id or connection sees none rather than all."""
    if user.is_admin:
        return None
    if not user.helpdesk_user_id or not user.connection_id:
        return false()
    surveys = select(Survey.id).where(Survey.connection_id == user.connection_id)
    return and_(Rating.agent_ref == user.helpdesk_user_id, Rating.survey_id.in_(surveys))
