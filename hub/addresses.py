"""Email addresses: one normal form for sending, the suppression list and the cooldown."""

from __future__ import annotations

from collections.abc import Iterable

from email_validator import EmailNotValidError
from email_validator import validate_email


def normalise_email(email: str | None) -> str | None:
    """The address in the hub's normal form, or None when it is not a valid address.

    Trimmed first, then checked for syntax only (no DNS: a scan must not wait on it), so
    `" Jane.Doe@Example.COM "` is valid. The whole address is then lower-cased: every
    mail provider in use treats the local part case-insensitively, and one form per
    person means an unsubscribe or a cooldown is honoured whatever case the helpdesk
    stores next time. Lists (`a,b@x.com`), display names and spaces are refused.
    """
    if not email or not isinstance(email, str):
        return None
    try:
        checked = validate_email(email.strip(), check_deliverability=False)
    except EmailNotValidError:
        return None
    # The ASCII form where there is one: an IDN domain in punycode goes through any
    # SMTP server, the Unicode form only through those that speak SMTPUTF8.
    return (checked.ascii_email or checked.normalized).lower()


def email_key(email: str) -> str:
    """The form an address is compared in, valid or not (trimmed, lower-cased)."""
    return normalise_email(email) or email.strip().lower()


def first_valid(candidates: Iterable[str | None]) -> str | None:
    """The first address among `candidates` that is valid, in normal form."""
    for candidate in candidates:
        address = normalise_email(candidate)
        if address:
            return address
    return None
