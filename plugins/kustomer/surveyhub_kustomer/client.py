"""A small Kustomer REST client: auth, timeouts, JSON:API, typed errors, retries, budget."""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import requests

from hub.helpdesk import BadCredentials
from hub.helpdesk import BadRequest
from hub.helpdesk import HelpdeskError
from hub.helpdesk import MissingPermission
from hub.helpdesk import NotFound
from hub.helpdesk import RateLimited
from hub.helpdesk import Unavailable
from surveyhub_kustomer.ratelimit import RateBudget

log = logging.getLogger(__name__)

USER_AGENT = "SurveyHub-Kustomer/0.1 (+https://github.com/surveyhub/surveyhub)"
TIMEOUT = (5, 30)  # connect, read (seconds)

#: The roles that allow each kind of call: permission-set names first, then legacy ones.
ROLES: dict[str, tuple[str, ...]] = {
    "search": (
        "org.permission.search.create",
        "org.permission.search.update",
        "org.user.search.read",
        "org.admin.search.read",
    ),
    "conversation.read": ("org.permission.conversation.read", "org.user.conversation.read"),
    "conversation.update": ("org.permission.conversation.update", "org.user.conversation.write"),
    "customer.read": ("org.permission.customer.read", "org.user.customer.read"),
    "note.create": ("org.permission.note.create", "org.user.note.write"),
    "note.read": ("org.permission.note.read", "org.user.note.read"),
    "metadata.read": (
        "org.permission.metadata.read",
        "org.user.metadata.read",
        "org.admin.metadata.read",
    ),
    "metadata.update": ("org.permission.metadata.update", "org.admin.metadata.write"),
    "user.read": ("org.permission.user.read", "org.user.read", "org.user.user.read"),
    "outbound_webhook": (
        "org.permission.outbound_webhook.create",
        "org.outbound_webhooks",
        "org.admin.outbound_webhooks",
    ),
}
#: What each need is for, in the sentence that names a missing role.
PURPOSE = {
    "search": "find resolved conversations",
    "conversation.read": "re-check a conversation before sending",
    "conversation.update": "write the score into the conversation's custom attribute",
    "customer.read": "read the customer's email address",
    "note.create": "post the rating as a note",
    "note.read": "check for an earlier note before posting again",
    "metadata.read": "read the conversation attributes",
    "metadata.update": "define the score attribute",
    "user.read": "import agents",
    "outbound_webhook": "receive Kustomer's webhooks (optional: polling works without)",
}
_BROAD = ("org.admin", "org.user")


def has_role(roles: set[str], need: str) -> bool:
    """Whether `roles` (a key's) allow the calls of kind `need`."""
    accepted = ROLES[need]
    if roles & set(accepted):
        return True
    # The broad legacy roles `org.user` / `org.admin` cover their own sub-roles.
    return any(role in roles for role in _BROAD if any(a.startswith(role + ".") for a in accepted))


def missing_role_message(need: str) -> str:
    accepted = ROLES[need]
    return (
        f"The Kustomer API key lacks the role to {PURPOSE[need]}. Create a key with "
        f"{accepted[0]} (or the legacy {accepted[-1]})."
    )


def error_text(response: requests.Response) -> str:
    """Kustomer's own error sentence, from either of its two error shapes."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason
    errors = body.get("errors") if isinstance(body, dict) else None
    if not errors:
        return (body.get("message") if isinstance(body, dict) else None) or response.reason
    first = errors[0] if isinstance(errors, list) else errors
    if not isinstance(first, dict):
        return str(first)[:300]
    parts = [first.get("detail") or first.get("title") or first.get("message") or first.get("code")]
    sub = ((first.get("meta") or {}).get("subErrors") or [{}])[0]
    source = sub.get("source") or first.get("source") or {}
    where = source.get("pointer") or source.get("parameter")
    if where or sub.get("title"):
        parts.append(" ".join(str(p) for p in (where, sub.get("title")) if p))
    return ": ".join(p for p in parts if p)


def unreachable_reason(exc: requests.RequestException) -> str:
    """Why a request got no answer, in words (not urllib3's repr)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 10:
        chain.append(current)
        inner = current.args[0] if current.args else None
        current = (
            current.__cause__
            or current.__context__
            or (inner if isinstance(inner, BaseException) else None)
        )
        if current is not None and getattr(current, "reason", None) is not None:
            reason = current.reason
            if isinstance(reason, BaseException) and reason not in chain:
                chain.append(reason)
    text = " ".join(str(e) for e in chain).lower()
    if isinstance(exc, requests.ReadTimeout):
        return f"it accepted the connection but did not answer within {TIMEOUT[1]} seconds."
    if isinstance(exc, requests.ConnectTimeout) or "timed out" in text:
        return f"no answer within {TIMEOUT[0]} seconds (a firewall or a wrong address?)."
    if isinstance(exc, requests.exceptions.SSLError) or "certificate" in text:
        return "its TLS certificate could not be verified."
    if (
        any(isinstance(e, socket.gaierror) for e in chain)
        or "name or service" in text
        or ("failed to resolve" in text or "nodename nor servname" in text)
    ):
        return "the host name could not be found (check the URL for typos)."
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in text:
        return "the connection was refused (nothing listens at that address)."
    if any(isinstance(e, ConnectionResetError) for e in chain) or "reset" in text:
        return "the connection was closed before it answered."
    return "the network connection failed."


class KustomerClient:
    """Calls one Kustomer org's API with its key; raises `hub.helpdesk` errors."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        budget: RateBudget | None = None,
        *,
        retries: int = 4,
        max_wait: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        on_response: Callable[[int | None], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.budget = budget
        self.retries = retries
        self.max_wait = max_wait
        self.sleep = sleep
        self.clock = clock
        #: Told of every request's status code (None: no answer), e.g. to count 429s.
        self.on_response = on_response
        self.requests_made = 0
        self.session = requests.Session()
        self.session.headers.update(
            {
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            }
        )

    def url(self, path: str) -> str:
        """An absolute URL for a path under /v1 (`/conversations/1`) or a relative link."""
        if path.startswith(("http://", "https://")):
            # Only ever send the API key back to the org's own API.
            if urlsplit(path)._replace(path="", query="", fragment="").geturl() != self.origin:
                raise BadRequest(f"Kustomer returned a link to another host: {path}")
            return path
        if path.startswith("/v1/"):
            return self.origin + path  # Kustomer's relative `links`
        return self.base_url + path

    def request(
        self,
        method: str,
        path: str,
        *,
        need: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
        search: bool = False,
        idempotent: bool = True,
        retry_unreachable: bool = True,
    ) -> dict[str, Any] | None:
        """Call the API and return the decoded body (None for an empty one).

        429s wait for the reset (shared through the budget) and retry; 5xx and network
        errors retry with jittered backoff, but only for `idempotent` calls: a POST whose
        answer was lost may have been applied, and the caller must check first. Without
        `retry_unreachable` a host that cannot be reached is reported at once (the
        connect form, where a person waits).
        """
        url = self.url(path)
        for attempt in range(self.retries + 1):
            self._wait_for_budget(search)
            try:
                self.requests_made += 1
                response = self.session.request(
                    method, url, json=json, params=params, timeout=TIMEOUT, allow_redirects=False
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                self._told(None)
                error: HelpdeskError = Unavailable(
                    f"SurveyHub could not reach {self.origin}: {unreachable_reason(exc)}"
                )
                if not retry_unreachable:
                    raise error from None
            else:
                self._told(response.status_code)
                if self.budget and response.status_code != 429:
                    # After a 429 its reset time says when to resume, not the counters.
                    self.budget.learn(response.headers)
                if response.status_code == 429:
                    error = self._rate_limited(response, attempt)
                elif response.status_code >= 500:
                    error = Unavailable(
                        f"Kustomer answered {response.status_code}: {error_text(response)}"
                    )
                else:
                    return self._result(response, need)
            if not idempotent and not isinstance(error, RateLimited):
                raise error
            delay = (
                error.retry_at - self.clock()
                if isinstance(error, RateLimited)
                else self._backoff(attempt)
            )
            if attempt == self.retries or delay > self.max_wait:
                raise error
            log.info("Kustomer: %s; retrying in %.1fs", error, delay)
            self.sleep(max(0.0, delay))
        raise AssertionError("unreachable")

    def pages(
        self, method: str, path: str, *, need: str, json: Any = None, search: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Each page of a listing, following Kustomer's relative `links.next`."""
        url: str | None = path
        while url:
            body = self.request(method, url, need=need, json=json, search=search) or {}
            yield body
            url = (body.get("links") or {}).get("next")

    def _told(self, status: int | None) -> None:
        if self.on_response is not None:
            self.on_response(status)

    def _wait_for_budget(self, search: bool) -> None:
        if self.budget is None:
            return
        while (resume_at := self.budget.take(search)) > 0:
            wait = resume_at - self.clock()
            if wait > self.max_wait:
                raise RateLimited("The Kustomer request budget is used up for now.", resume_at)
            self.sleep(max(0.0, wait))

    def _rate_limited(self, response: requests.Response, attempt: int) -> RateLimited:
        reset = response.headers.get("x-ratelimit-reset")
        try:
            retry_at = float(reset)
        except (TypeError, ValueError):
            retry_at = self.clock() + self._backoff(attempt)
        if self.budget:
            self.budget.block_until(retry_at)
        return RateLimited(f"Kustomer rate limit reached: {error_text(response)}", retry_at)

    @staticmethod
    def _backoff(attempt: int) -> float:
        return min(60.0, 2.0**attempt) * random.uniform(0.5, 1.0)

    @staticmethod
    def _result(response: requests.Response, need: str) -> dict[str, Any] | None:
        status = response.status_code
        if status < 300:
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                raise Unavailable(
                    f"Kustomer answered {status} with something that is not JSON "
                    f"({response.text.strip()[:100]!r}); a proxy may be in the way."
                ) from None
        if status < 400:
            raise BadRequest(f"Kustomer answered with a redirect ({status}); check the URL.")
        text = error_text(response)
        if status == 401 or "associated with pod" in text:
            if "associated with pod" in text:
                raise BadCredentials(
                    f"This API key belongs to another Kustomer region ({text}). Enter your "
                    "org's own address (https://ORG.kustomerapp.com) so requests reach it."
                )
            raise BadCredentials(
                f"Kustomer refused the API key ({text}). Check that it is complete, not "
                "expired and not limited to other IP addresses."
            )
        if status == 403:
            raise MissingPermission(f"{missing_role_message(need)} ({text})", ROLES[need])
        if status == 404:
            raise NotFound(f"Kustomer: not found ({text})")
        raise BadRequest(f"Kustomer refused the request ({status}): {text}")
