"""Signed links in survey emails: score links (which expire) and unsubscribe links."""

from __future__ import annotations

import re
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from functools import lru_cache

from flask import current_app
from itsdangerous import BadSignature
from itsdangerous import URLSafeSerializer
from itsdangerous import URLSafeTimedSerializer

from hub.config import signing_keys

RATING_SALT = "surveyhub:rating"
UNSUBSCRIBE_SALT = "surveyhub:unsubscribe"


class LinkInvalid(Exception):
    """The link was altered, mistyped or made with another key."""


class LinkExpired(Exception):
    """The link is genuine but older than its survey allows."""


@lru_cache(maxsize=16)
def _rating_serializer(keys: tuple[str, ...]) -> URLSafeTimedSerializer:
    # Made once per set of keys: every rating page reads a token.
    return URLSafeTimedSerializer(list(keys), salt=RATING_SALT)


def rating_token(delivery_id: int) -> str:
    """A token naming the delivery only, signed with the app secret and timestamped."""
    return _rating_serializer(tuple(signing_keys(current_app))).dumps(delivery_id)


#: What itsdangerous makes: URL-safe base64 parts joined by dots. Anything else (a
#: non-ASCII suffix, spaces) is refused before the signature is looked at.
TOKEN = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+){1,3}")


def read_rating_token(token: str) -> tuple[int, datetime]:
    """The delivery id in `token` and when the token was made; raises `LinkInvalid`."""
    if len(token) > 200 or not TOKEN.fullmatch(token):
        raise LinkInvalid(token)
    serializer = _rating_serializer(tuple(signing_keys(current_app)))
    try:
        delivery_id, issued_at = serializer.loads(token, return_timestamp=True)
    except BadSignature:
        raise LinkInvalid(token) from None
    if not isinstance(delivery_id, int):
        raise LinkInvalid(token)
    return delivery_id, issued_at.astimezone(UTC)


def check_not_expired(issued_at: datetime, expiry_days: int, now: datetime) -> None:
    """Raise `LinkExpired` when a link issued at `issued_at` is past its survey's expiry."""
    if now - issued_at > timedelta(days=expiry_days):
        raise LinkExpired(issued_at)


def unsubscribe_token(delivery_id: int) -> str:
    """A token for the unsubscribe link; it never expires (unsubscribing must always work)."""
    return URLSafeSerializer(signing_keys(current_app), salt=UNSUBSCRIBE_SALT).dumps(delivery_id)


def read_unsubscribe_token(token: str) -> int:
    """The delivery id in an unsubscribe token; raises `LinkInvalid`."""
    if len(token) > 200 or not TOKEN.fullmatch(token):
        raise LinkInvalid(token)
    try:
        delivery_id = URLSafeSerializer(signing_keys(current_app), salt=UNSUBSCRIBE_SALT).loads(
            token
        )
    except BadSignature:
        raise LinkInvalid(token) from None
    if not isinstance(delivery_id, int):
        raise LinkInvalid(token)
    return delivery_id
