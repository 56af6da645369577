"""Turning what an admin types as "Kustomer URL" into the API base, and nothing else."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

DOMAIN = "kustomerapp.com"
#: Regional API hosts, usable as they are (an advanced override for orgs on one pod).
REGIONAL_HOSTS = frozenset(
    {"api.kustomerapp.com", "api.prod2.kustomerapp.com", "api.prod4.kustomerapp.com"}
)
_ORG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_RESERVED = frozenset({"api", "www", "cdn", "app", "help", "developer"})


class InvalidKustomerUrl(ValueError):
    """The URL does not name a Kustomer org; the message says what would."""


def _explain(given: str) -> InvalidKustomerUrl:
    return InvalidKustomerUrl(
        f"'{given}' is not a Kustomer address. Enter your org's address as you see it in "
        "the browser, e.g. https://acme.kustomerapp.com (or just 'acme')."
    )


def api_base(given: str, allowed: Iterable[str] = ()) -> str:
    """The API base URL (ending in /v1) for what the admin typed.

    Accepts `acme`, `acme.kustomerapp.com`, `https://acme.kustomerapp.com/app/...`,
    `https://acme.api.kustomerapp.com[/v1]` and the regional API hosts. Any other host is
    refused unless its base URL is in `allowed` (the sandbox, a proxy); a user-supplied
    URL must never make the server call arbitrary hosts.
    """
    text = (given or "").strip()
    if not text:
        raise InvalidKustomerUrl("Enter your Kustomer address, e.g. https://acme.kustomerapp.com.")
    allowed_bases = {_base_of(url) for url in allowed if url.strip()}
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        raise _explain(given) from None
    base = _base_of(text)
    if base in allowed_bases:
        return base + "/v1"
    if parts.scheme != "https" or port not in (None, 443) or parts.username or parts.password:
        raise _explain(given)
    if host in REGIONAL_HOSTS:
        return f"https://{host}/v1"
    if "." not in host:  # a bare org name such as "acme"
        host = f"{host}.{DOMAIN}"
    if not host.endswith("." + DOMAIN):
        raise _explain(given)
    labels = host[: -len(DOMAIN) - 1].split(".")
    if len(labels) == 2 and labels[1] == "api":
        labels = labels[:1]  # acme.api.kustomerapp.com
    if len(labels) != 1 or labels[0] in _RESERVED or not _ORG.match(labels[0]):
        raise _explain(given)
    return f"https://{labels[0]}.api.{DOMAIN}/v1"


def web_base(api: str) -> str | None:
    """The web app's address for an API base: `https://acme.kustomerapp.com` for
    `https://acme.api.kustomerapp.com/v1`; an allow-listed base (the sandbox) serves
    both; a regional API host names no org, so there is no web address."""
    base = api.removesuffix("/v1")
    host = (urlsplit(base).hostname or "").lower()
    if host in REGIONAL_HOSTS:
        return None
    if host.endswith(".api." + DOMAIN):
        return base.replace(".api." + DOMAIN, "." + DOMAIN, 1)
    return base


def _base_of(url: str) -> str:
    """scheme://host[:port] of a URL, lower-cased, for comparing against the allow-list."""
    parts = urlsplit(url.strip() if "://" in url else "https://" + url.strip())
    netloc = (parts.hostname or "").lower()
    if parts.port:
        netloc += f":{parts.port}"
    return f"{parts.scheme.lower()}://{netloc}"
