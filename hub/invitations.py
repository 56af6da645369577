"""Inviting helpdesk agents: hub accounts, single-use set-password links, the email."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from email.message import EmailMessage

from flask import current_app
from flask import render_template
from itsdangerous import BadSignature
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import select

from hub.addresses import email_key
from hub.config import signing_keys
from hub.extensions import db
from hub.helpdesk import Agent
from hub.mail import Mailer
from hub.mail import MailError
from hub.mail import staff_email
from hub.models import Connection
from hub.models import Role
from hub.models import User
from hub.models import UserStatus
from hub.models import utcnow

INVITE_SALT = "surveyhub:invite"
#: How long a set-password link works.
INVITE_MAX_AGE = 7 * 24 * 3600


class InviteInvalid(Exception):
    """The link is altered, expired, used already or replaced by a newer invitation."""


def _fingerprint(user: User) -> str:
    # Changes when the password is set (single use) and when a new invitation is sent
    # (older links stop working).
    stamp = user.invited_at.isoformat() if user.invited_at else ""
    return hashlib.sha256(f"{user.password_hash or ''}|{stamp}".encode()).hexdigest()[:20]


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(signing_keys(current_app), salt=INVITE_SALT)


def invite_token(user: User) -> str:
    """A signed set-password token for `user`, valid once and for `INVITE_MAX_AGE`."""
    return _serializer().dumps([user.id, _fingerprint(user)])


def read_invite(token: str) -> User:
    """The invited user behind `token`; raises `InviteInvalid`."""
    try:
        user_id, fingerprint = _serializer().loads(token, max_age=INVITE_MAX_AGE)
    except (BadSignature, ValueError, TypeError):
        raise InviteInvalid from None
    user = db.session.get(User, user_id) if isinstance(user_id, int) else None
    if user is None or user.status == UserStatus.ARCHIVED or fingerprint != _fingerprint(user):
        raise InviteInvalid
    return user


def agent_account(agent: Agent, connection: Connection) -> User:
    """The hub account of a helpdesk agent, created (as invited) if it is new."""
    address = email_key(agent.email) or agent.email.strip().lower()
    user = db.session.execute(select(User).where(User.email == address)).scalar_one_or_none()
    if user is None:
        user = User(email=address, role=Role.AGENT.value, status=UserStatus.INVITED.value)
        db.session.add(user)
    user.name = user.name or agent.name
    # An agent sees the ratings of one helpdesk account: the one they were first
    # invited from (importing the same person from another account changes nothing).
    if user.role == Role.AGENT and user.connection_id in (None, connection.id):
        user.connection_id = connection.id
        user.helpdesk_user_id = agent.id
    return user


def invitation_email(user: User, inviter: str) -> EmailMessage:
    """The email with the set-password link."""
    link = f"{current_app.config['HUB_BASE_URL'].rstrip('/')}/invite/{invite_token(user)}"
    text = render_template("email/invite.txt", user=user, link=link, inviter=inviter, days=7)
    return staff_email(
        current_app.config["MAIL_FROM"],
        user.name,
        user.email,
        "You are invited to SurveyHub",
        text,
        "invite",
    )


def send_invitations(users: Iterable[User], inviter: str) -> dict[str, str]:
    """Email each user a fresh set-password link; returns the addresses that failed, with
    why. Each user's `invited_at` is renewed (older links stop working)."""
    failed: dict[str, str] = {}
    users = list(users)
    if not users:
        return failed
    for user in users:
        user.invited_at = utcnow()
    db.session.commit()
    try:
        with Mailer(current_app.config) as mailer:
            for user in users:
                try:
                    mailer.send(invitation_email(user, inviter))
                except MailError as exc:
                    failed[user.email] = str(exc)
    except MailError as exc:
        failed.update({user.email: str(exc) for user in users if user.email not in failed})
    return failed


def accept(user: User, password: str) -> None:
    """Set the invited user's password and make the account active (the link is used)."""
    user.set_password(password)
    user.status = UserStatus.ACTIVE.value
    db.session.commit()
