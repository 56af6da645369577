"""The guard on URLs the hub calls on an admin's behalf (webhook subscribers).

A URL someone types must never make the server reach into its own network: hosts that
resolve to private, loopback, link-local or otherwise non-public addresses are refused,
unless their base (scheme://host:port) is in the allow-list the helpdesk URLs use
(`HUB_ALLOWED_HELPDESK_URLS`), e.g. a receiver on the same machine in development.
The check runs when a URL is saved and again on every connection (DNS may change), and
the address checked is the one connected to, so a name cannot resolve differently in
between.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.connectionpool import HTTPSConnectionPool

MAX_URL_LENGTH = 2000


class UnsafeUrl(ValueError):
    """The URL may not be called; the message says why, for the person who typed it."""


def base_of(url: str) -> str:
    """scheme://host[:port] of a URL, lower-cased, for comparing with the allow-list."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return ""
    netloc = (parts.hostname or "").lower()
    if ":" in netloc:
        netloc = f"[{netloc}]"
    scheme = parts.scheme.lower()
    if port and port != {"http": 80, "https": 443}.get(scheme):
        netloc += f":{port}"
    return f"{scheme}://{netloc}"


def is_allowed(url: str, allowed: Iterable[str]) -> bool:
    """Whether the URL's base is allow-listed (then any address is fine)."""
    base = base_of(url)
    return bool(base) and base in {base_of(item) for item in allowed if item.strip()}


def check_url(url: str, allowed: Iterable[str] = (), resolve: bool = True) -> str:
    """The URL, trimmed, if the hub may call it; else `UnsafeUrl` saying why.

    Only http and https, no user name or password in it, and (unless allow-listed)
    a host whose every address is public. With `resolve`, host names are looked up.
    """
    text = (url or "").strip()
    if not text:
        raise UnsafeUrl("Enter the URL to send events to, e.g. https://hooks.example.com/hub.")
    if len(text) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"The URL is too long (at most {MAX_URL_LENGTH} characters).")
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise UnsafeUrl("The URL may not contain spaces or control characters.")
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        raise UnsafeUrl("This is not a valid URL.") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise UnsafeUrl("Use an http:// or https:// URL with a host name.")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("Leave user names and passwords out of the URL.")
    if is_allowed(text, allowed):
        return text
    if resolve:
        default_port = 443 if parts.scheme.lower() == "https" else 80
        public_address(host, port or default_port)
    else:
        literal = _literal(host)
        if literal is not None:
            _refuse_unless_public(host, literal)
    return text


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


def _refuse_unless_public(host: str, address) -> None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    if address.is_global and not address.is_multicast:
        return
    if address.is_loopback:
        kind = "a loopback address"
    elif address.is_link_local:
        kind = "a link-local address (such as a cloud metadata service)"
    elif address.is_private:
        kind = "a private network address"
    else:
        kind = "not a public address"
    shown = host if host.strip("[]") == str(address) else f"{host} ({address})"
    raise UnsafeUrl(
        f"The hub does not call {shown}: it is {kind}. Use a public address, or ask the "
        "operator to allow-list it in HUB_ALLOWED_HELPDESK_URLS."
    )


def public_address(host: str, port: int) -> str:
    """The first address of `host`, once every address it has is checked public."""
    literal = _literal(host)
    if literal is not None:
        _refuse_unless_public(host, literal)
        return str(literal)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise UnsafeUrl(f"The host {host} cannot be found (DNS).") from None
    addresses = [info[4][0] for info in infos]
    # Every address must be public: a name with one private address could be made to
    # connect there.
    for address in addresses:
        _refuse_unless_public(host, ipaddress.ip_address(address.split("%")[0]))
    return addresses[0]


class _GuardedHTTPConnection(HTTPConnection):
    """Connects only to a public address, the one it checked (no second DNS look-up)."""

    def _new_conn(self):
        checked = public_address(self._dns_host, self.port)
        original, self._dns_host = self._dns_host, checked
        try:
            return super()._new_conn()
        finally:
            self._dns_host = original  # the Host header and TLS keep the name


class _GuardedHTTPSConnection(_GuardedHTTPConnection, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _GuardedHTTPPool,
            "https": _GuardedHTTPSPool,
        }


def guarded_session(url: str, allowed: Iterable[str] = ()) -> requests.Session:
    """A requests session for calling `url`: it refuses non-public addresses at connect
    time unless `url` is allow-listed, and ignores proxy settings from the environment
    (a proxy would connect on its behalf, unchecked). Do not follow redirects with it."""
    session = requests.Session()
    session.trust_env = False
    if not is_allowed(url, allowed):
        adapter = _GuardedAdapter()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session
