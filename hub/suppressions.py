"""The suppression list: addresses that must never be surveyed again.

Only a keyed hash of each address is kept: HMAC-SHA256 of its normal form
(`hub.addresses.email_key`), keyed with a random key the hub makes once and stores
encrypted under HUB_SECRET_KEY (`HubKey` "suppressions"). So the list answers "is this
address on it?" for an address one already has, a copy of the database alone tells no
one which addresses are on it (a dictionary of likely addresses needs the key), and
rotating HUB_SECRET_KEY (`surveyhub rotate-secrets` re-encrypts the key) keeps every
entry valid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

from flask import current_app
from sqlalchemy import exists
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from hub.addresses import email_key
from hub.extensions import db
from hub.models import HubKey
from hub.models import Suppression

#: The `HubKey` row holding the suppression list's hash key.
KEY_NAME = "suppressions"
_CACHE = "hub-suppression-key"
#: Hashes per `IN (...)` list: well under every database's parameter limit.
_IN_CHUNK = 500


def _stored_key() -> bytes | None:
    cached = current_app.extensions.get(_CACHE)
    if cached is not None:
        return cached
    row = db.session.execute(select(HubKey).where(HubKey.name == KEY_NAME)).scalar()
    if row is None:
        return None
    secret = current_app.extensions["hub"].vault.decrypt(row.secret_encrypted)
    key = base64.b64decode(secret["key"])
    # The key never changes once made (rotation re-encrypts it, same value).
    current_app.extensions[_CACHE] = key
    return key


def ensure_key() -> bytes:
    """The suppression list's hash key, made (and committed) on first use."""
    key = _stored_key()
    if key is not None:
        return key
    fresh = base64.b64encode(secrets.token_bytes(32)).decode()
    vault = current_app.extensions["hub"].vault
    db.session.add(HubKey(name=KEY_NAME, secret_encrypted=vault.encrypt({"key": fresh})))
    try:
        db.session.commit()
    except IntegrityError:  # another process made it first: use theirs
        db.session.rollback()
    key = _stored_key()
    assert key is not None
    return key


def hash_with(key: bytes, email: str) -> str:
    """The suppression hash of `email` (any spelling of its normal form) under `key`."""
    return hmac.new(key, email_key(email).encode(), hashlib.sha256).hexdigest()


def suppression_hash(email: str) -> str:
    """The hash the suppression list keeps for `email` (makes the key on first use)."""
    return hash_with(ensure_key(), email)


def is_suppressed(email: str) -> bool:
    """Whether `email` (in any spelling of its normal form) is on the suppression list."""
    key = _stored_key()
    if key is None:  # no key yet: nothing was ever suppressed
        return False
    query = select(Suppression.id).where(Suppression.email_hash == hash_with(key, email))
    return db.session.execute(query).first() is not None


def suppressed_among(emails: Iterable[str]) -> set[str]:
    """Which of `emails` are on the suppression list (as given), in one query for a
    batch of decisions instead of one per address."""
    key = _stored_key()
    if key is None:  # no key yet: nothing was ever suppressed
        return set()
    by_hash = {hash_with(key, email): email for email in set(emails)}
    hashes = sorted(by_hash)
    found: set[str] = set()
    for start in range(0, len(hashes), _IN_CHUNK):
        query = select(Suppression.email_hash).where(
            Suppression.email_hash.in_(hashes[start : start + _IN_CHUNK])
        )
        found.update(by_hash[h] for h in db.session.execute(query).scalars())
    return found


def not_suppressed(key: bytes, email: str):
    """SQL that is true while `email` is not on the list: a condition for the statement
    that claims a delivery for sending, so an address suppressed a moment before the
    claim is never sent to."""
    return ~exists().where(Suppression.email_hash == hash_with(key, email))


def stage_suppression(email: str, reason: str) -> str:
    """Add `email` to the suppression list in the current transaction, unless it is on
    it already; return its hash. Call `ensure_key()` before opening the transaction."""
    digest = suppression_hash(email)
    query = select(Suppression.id).where(Suppression.email_hash == digest)
    if db.session.execute(query).first() is None:
        db.session.add(Suppression(email_hash=digest, reason=reason))
    return digest


def suppress(email: str, reason: str) -> None:
    """Put `email` on the suppression list (idempotent) and commit."""
    ensure_key()
    stage_suppression(email, reason)
    try:
        db.session.commit()
    except IntegrityError:  # a concurrent request added it first: same outcome
        db.session.rollback()
