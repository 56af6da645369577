"""Agents: the helpdesk's people beside their hub accounts, inviting, archiving and
restoring them (the Agents pages and the API share these)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select

from hub.addresses import email_key
from hub.connections import TROUBLE
from hub.connections import open_helpdesk
from hub.extensions import db
from hub.helpdesk import Agent
from hub.invitations import agent_account
from hub.invitations import send_invitations
from hub.models import Connection
from hub.models import User
from hub.models import UserStatus


@dataclass
class AgentRow:
    """One of the helpdesk's human users and their hub account, if any."""

    id: str
    name: str
    email: str
    account: User | None


def helpdesk_agents(connection: Connection) -> tuple[list[AgentRow], str]:
    """The helpdesk's human users beside their hub accounts, or an error to show."""
    try:
        found = list(open_helpdesk(connection).agents())
    except TROUBLE as exc:
        return [], str(exc)
    emails = [email_key(a.email) for a in found if a.email]
    accounts = {}
    if emails:
        query = select(User).where(User.email.in_(emails))
        accounts = {u.email: u for u in db.session.execute(query).scalars()}
    rows = [
        AgentRow(a.id, a.name, a.email, accounts.get(email_key(a.email))) for a in found if a.email
    ]
    return sorted(rows, key=lambda r: (r.name or r.email).lower()), ""


@dataclass
class Invited:
    """What inviting some of a helpdesk's agents did: accounts emailed, addresses whose
    email failed (with why), ids the helpdesk does not know, or the helpdesk's error."""

    users: list[User]
    failed: dict[str, str]
    unknown: list[str]
    error: str = ""


def invite_agents(connection: Connection, agent_ids: Iterable[str], inviter: str) -> Invited:
    """Make (or find) hub accounts for the chosen helpdesk agents and email each one not
    signed up yet a link to set a password."""
    found, error = helpdesk_agents(connection)
    if error:
        return Invited([], {}, [], error)
    by_id = {row.id: row for row in found}
    users, unknown = [], []
    for agent_id in dict.fromkeys(agent_ids):
        row = by_id.get(agent_id)
        if row is None:
            unknown.append(agent_id)
            continue
        user = agent_account(Agent(row.id, row.name, row.email), connection)
        if user.status == UserStatus.INVITED:
            users.append(user)
    db.session.commit()
    failed = send_invitations(users, inviter)
    return Invited(users, failed, unknown)


def archive(user: User) -> None:
    """Archive an agent: no sign-in, no API tokens, sessions ended; ratings are kept."""
    user.status = UserStatus.ARCHIVED.value
    user.end_sessions()
    db.session.commit()


def restore(user: User) -> None:
    """Let an archived agent sign in again (or be invited, if they never set a password)."""
    user.status = (UserStatus.ACTIVE if user.password_hash else UserStatus.INVITED).value
    db.session.commit()
