"""Personal API tokens: made, found by their hash, revoked."""

from __future__ import annotations

import hashlib
import re
import secrets

from sqlalchemy import select

from hub.extensions import db
from hub.models import ApiToken
from hub.models import User
from hub.models import utcnow

SCOPES = ("read", "write")
#: "shub_" + 8 characters naming the token in lists + "_" + 43 secret characters.
TOKEN = re.compile(r"shub_([A-Za-z0-9]{8})_[A-Za-z0-9_-]{43}")
#: How often `last_used_at` is written at most (seconds): not on every request.
TOUCH_EVERY = 60


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(user: User, name: str, scope: str) -> tuple[ApiToken, str]:
    """A new token for `user`; returns the row and the token itself (shown only now)."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    prefix = "".join(secrets.choice(alphabet) for _ in range(8))
    token = f"shub_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiToken(user_id=user.id, name=name, prefix=prefix, token_hash=_hash(token), scope=scope)
    db.session.add(row)
    db.session.commit()
    return row, token


def find_token(token: str) -> ApiToken | None:
    """The live token `token` names (None: malformed, unknown, revoked, or its user can
    no longer sign in). Notes when it was used, at most once a minute."""
    if not TOKEN.fullmatch(token):
        return None
    row = db.session.execute(
        select(ApiToken).where(ApiToken.token_hash == _hash(token))
    ).scalar_one_or_none()
    if row is None or row.revoked_at is not None or not row.user.is_active:
        return None
    now = utcnow()
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > TOUCH_EVERY:
        row.last_used_at = now
        db.session.commit()
    return row


def revoke(row: ApiToken) -> None:
    """Stop the token from working, keeping its row for the list."""
    row.revoked_at = row.revoked_at or utcnow()
    db.session.commit()
