"""The helpdesk connector contract: what the pipeline asks of Kustomer and its successors."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timedelta
from typing import Any
from typing import ClassVar

from marshmallow import Schema


class HelpdeskError(Exception):
    """A helpdesk call failed; the message is the helpdesk's own text where it gave one."""

    #: Whether retrying the same call later may succeed.
    retryable: ClassVar[bool] = False


class BadCredentials(HelpdeskError):
    """The API key is wrong, expired or for another region."""


class MissingPermission(HelpdeskError):
    """The key lacks a role; `roles` names the ones that would do."""

    def __init__(self, message: str, roles: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.roles = roles


class NotFound(HelpdeskError):
    """The ticket (or other object) does not exist."""


class BadRequest(HelpdeskError):
    """The helpdesk refused the request's content (e.g. a wrong attribute type)."""


class RateLimited(HelpdeskError):
    """Over the helpdesk's rate limit; `retry_at` is when to try again (epoch seconds)."""

    retryable = True

    def __init__(self, message: str, retry_at: float) -> None:
        super().__init__(message)
        self.retry_at = retry_at

    def resume_at(self, now: datetime) -> datetime:
        """When to try again, as a datetime (at least a second after `now`)."""
        return now + timedelta(seconds=max(1.0, self.retry_at - now.timestamp()))


class Unavailable(HelpdeskError):
    """The helpdesk is unreachable, slow or failing (5xx): try again later."""

    retryable = True


#: Redis hashes counting each connection's helpdesk requests and 429 answers (field: the
#: context's name), shared by every process on every machine; `/metrics` reads them.
REQUESTS_KEY = "surveyhub:metrics:helpdesk-requests"
RATE_LIMITED_KEY = "surveyhub:metrics:helpdesk-rate-limited"


@dataclass(frozen=True)
class HelpdeskContext:
    """What the hub lends a connector: a name for shared state, Redis, the URL allow-list."""

    name: str = "default"
    redis: Any = None
    allowed_urls: tuple[str, ...] = ()

    def count_request(self, status: int | None) -> None:
        """Count one HTTP request made to the helpdesk for this connection, and a 429
        when `status` (the answer's status code; None when no answer came) is one.

        For `/metrics` and the Operations page; without Redis it counts nothing, and it
        never raises (a lost count must not fail a helpdesk call).
        """
        if self.redis is None:
            return
        with contextlib.suppress(Exception), self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(REQUESTS_KEY, self.name, 1)
            if status == 429:
                pipe.hincrby(RATE_LIMITED_KEY, self.name, 1)
            pipe.execute()


@dataclass(frozen=True)
class ConnectionCheck:
    """The result of checking a connection's credentials, for the connect form."""

    account: str
    key_name: str
    missing_roles: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.missing_roles


@dataclass(frozen=True)
class Agent:
    """A human helpdesk user who can be invited to the hub."""

    id: str
    name: str
    email: str


@dataclass(frozen=True)
class ScanWindow:
    """Which tickets a scan asks for: those last resolved within [resolved_after,
    resolved_before], whatever their status now (the pipeline decides, and records
    reopened or recently updated tickets as skipped).
    """

    resolved_after: datetime
    resolved_before: datetime
    #: Requester details are looked up only for tickets that can still be surveyed:
    #: created through one of `channels` and now in one of `statuses` (None: any).
    channels: tuple[str, ...] | None = None
    statuses: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Ticket:
    """What the pipeline needs to know about one ticket to decide and to send."""

    id: str
    status: str
    channel: str | None
    created_at: datetime | None
    updated_at: datetime | None
    resolved_at: datetime | None
    requester_email: str | None
    requester_name: str = ""
    requester_locale: str | None = None
    assignee_id: str | None = None
    tags: tuple[str, ...] = ()
    #: The conversation was opened by an agent (outbound), not by the customer.
    started_by_agent: bool = False
    #: The helpdesk's own satisfaction survey on this ticket (its status, e.g. "rated"),
    #: or None when the helpdesk sent none.
    helpdesk_survey: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WriteResult:
    """What a write-back left in the helpdesk."""

    #: The helpdesk's id of the note posted (None without a note).
    note_id: str | None = None
    #: The ticket's update time as the hub's own writes left it, so the pipeline does
    #: not mistake them for ticket activity (None if the helpdesk did not say).
    updated_at: datetime | None = None


@dataclass(frozen=True)
class TicketTraces:
    """What the hub wrote into one ticket for a person being erased: the custom
    attributes it set and the ids of the notes it posted."""

    ticket_id: str
    attribute_names: tuple[str, ...] = ()
    note_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class TicketEvent:
    """A webhook event, reduced to what the pipeline acts on."""

    event_id: str
    ticket_id: str
    resolved_at: datetime | None


class Helpdesk:
    """Base class of a helpdesk connector, built from a connection's settings and secrets.

    `settings_schema` drives the connect form; mark secret fields (API keys) with
    ``metadata={"secret": True}`` so the hub encrypts them and never shows them back.
    Every method may raise the `HelpdeskError` subclasses above.
    """

    key: ClassVar[str]
    title: ClassVar[str]
    settings_schema: ClassVar[type[Schema]]
    #: Paragraphs shown above the connect form: where the key is made, which roles it
    #: needs (plain text; one paragraph per line).
    help: ClassVar[str] = ""
    #: The app directory tile's logo as a `data:image/svg+xml,…` or `data:image/png;base64,…`
    #: URI (None: the title's initial).
    logo: ClassVar[str | None] = None

    def __init__(
        self,
        settings: dict[str, Any],
        secrets: dict[str, Any],
        context: HelpdeskContext | None = None,
    ) -> None:
        self.settings = settings
        self.secrets = secrets
        self.context = context or HelpdeskContext()

    @classmethod
    def secret_fields(cls) -> list[str]:
        """Names of the settings fields that are secrets."""
        fields = cls.settings_schema().fields
        return [name for name, f in fields.items() if f.metadata.get("secret")]

    def ticket_link(self, ticket: Ticket) -> str | None:
        """The ticket's page in the helpdesk's web app, for people (alerts, the
        deliveries log); None when the connector cannot tell."""
        return None

    def verify(self) -> ConnectionCheck:
        """Check the credentials and permissions, without changing anything."""
        raise NotImplementedError

    def agents(self) -> Iterator[Agent]:
        """The helpdesk's human users."""
        raise NotImplementedError

    def scan(
        self, window: ScanWindow, wants: Callable[[Ticket], bool] | None = None
    ) -> Iterator[Ticket]:
        """Stream the tickets in `window`, oldest update first, each once.

        Before looking a ticket's requester up, ask `wants(ticket)` with the ticket as
        far as it is known without the requester: when it is false, yield the ticket
        without requester details (the hub has decided it already, or will skip it for a
        reason that needs no address, so a look-up would waste a request). Without
        `wants`, look requesters up for tickets in the window's channels and statuses.

        A connector that reads tickets in pages should call `announce_page(wants,
        tickets)` with each page's tickets (without requesters, leaving out those it
        will not yield) before asking `wants` about any of them: the hub then reads
        what it knows of the page in one query and records the page's decisions in one
        transaction, instead of one of each per ticket.
        """
        raise NotImplementedError

    def fetch_ticket(self, ticket_id: str) -> Ticket:
        """One ticket as it is now (raises `NotFound`)."""
        raise NotImplementedError

    #: How many tickets `fetch_tickets` asks for in one request.
    fetch_batch_size: ClassVar[int] = 1

    def fetch_tickets(self, ticket_ids: Sequence[str]) -> dict[str, Ticket]:
        """Several tickets as they are now, by id; deleted ones are left out.

        Requester details may be missing: the pipeline re-checks tickets before sending
        with the address it recorded at the scan. Connectors whose API fetches many
        tickets in one request override this (and `fetch_batch_size`); this default asks
        one at a time.
        """
        found = {}
        for ticket_id in ticket_ids:
            try:
                found[ticket_id] = self.fetch_ticket(ticket_id)
            except NotFound:
                continue
        return found

    def prepare(self, attribute_name: str, title: str) -> None:
        """Make the helpdesk ready to store ratings in `attribute_name` (at activation)."""
        raise NotImplementedError

    def write_back(
        self,
        ticket_id: str,
        attribute_name: str,
        value: int,
        note: str | None,
        note_id: str,
        retry: bool,
    ) -> WriteResult:
        """Set the attribute and post `note` once (idempotent by `note_id`).

        With `retry` the connector first checks whether an earlier, ambiguous attempt
        already posted the note. Returns the note's id and the ticket's update time after
        these writes.
        """
        raise NotImplementedError

    def erase(self, traces: Sequence[TicketTraces]) -> list[TicketTraces]:
        """Remove the hub's notes and attribute values from these tickets (a person is
        being erased) where the helpdesk's API allows; return what stays in the helpdesk.

        A ticket that no longer exists has nothing left. This default removes nothing.
        """
        return list(traces)


def announce_page(wants: Callable[[Ticket], bool] | None, tickets: list[Ticket]) -> None:
    """Tell a scan's `wants` which tickets the next page holds (see `Helpdesk.scan`);
    a `wants` without a `page` method (a plain function) needs no telling."""
    page = getattr(wants, "page", None)
    if page is not None:
        page(tickets)
