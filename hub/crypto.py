"""Encryption at rest for helpdesk secrets (API keys), keyed from HUB_SECRET_KEY."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

from cryptography.fernet import Fernet
from cryptography.fernet import InvalidToken
from cryptography.fernet import MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"surveyhub:connection-secrets:v1"


class SecretsUnreadable(RuntimeError):
    """Stored secrets cannot be decrypted with the current or old secret keys."""


def _fernet_for(secret_key: str) -> Fernet:
    # HKDF turns an arbitrary-length app secret into the 32-byte key Fernet needs,
    # and the fixed `info` keeps this key distinct from the session-signing key.
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
        secret_key.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


class Vault:
    """Encrypts with the current secret key; decrypts with it or any old one."""

    def __init__(self, secret_key: str, old_secret_keys: Iterable[str] = ()) -> None:
        keys = [secret_key, *[k for k in old_secret_keys if k and k != secret_key]]
        self._fernet = MultiFernet([_fernet_for(k) for k in keys])

    def encrypt(self, values: dict[str, Any]) -> str:
        """Return an opaque token holding `values`."""
        return self._fernet.encrypt(json.dumps(values, sort_keys=True).encode()).decode()

    def decrypt(self, token: str) -> dict[str, Any]:
        """Return the values inside `token`."""
        try:
            return json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken:
            raise SecretsUnreadable(
                "Stored helpdesk secrets cannot be decrypted: HUB_SECRET_KEY changed. "
                "Put the previous key in HUB_OLD_SECRET_KEYS, then run "
                "`surveyhub rotate-secrets`."
            ) from None

    def rotate(self, token: str) -> str:
        """Re-encrypt `token` under the current secret key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise SecretsUnreadable(
                "A stored secret matches neither HUB_SECRET_KEY nor HUB_OLD_SECRET_KEYS."
            ) from None
