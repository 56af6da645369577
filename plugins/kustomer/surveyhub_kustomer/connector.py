"""The Kustomer connector: verify, agents, scan, re-check, prepare and write back."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
from collections import OrderedDict
from collections import deque
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from typing import Any
from urllib.parse import quote

from marshmallow import Schema
from marshmallow import fields

from hub.addresses import first_valid
from hub.helpdesk import Agent
from hub.helpdesk import ConnectionCheck
from hub.helpdesk import Helpdesk
from hub.helpdesk import HelpdeskContext
from hub.helpdesk import NotFound
from hub.helpdesk import ScanWindow
from hub.helpdesk import Ticket
from hub.helpdesk import TicketTraces
from hub.helpdesk import Unavailable
from hub.helpdesk import WriteResult
from hub.helpdesk import announce_page
from surveyhub_kustomer.client import ROLES
from surveyhub_kustomer.client import KustomerClient
from surveyhub_kustomer.client import has_role
from surveyhub_kustomer.ratelimit import RateBudget
from surveyhub_kustomer.urls import api_base
from surveyhub_kustomer.urls import web_base

log = logging.getLogger(__name__)

PAGE_SIZE = 100
#: Kustomer's search stops at page 100; before that the scan restarts by keyset.
LAST_PAGE = 100
#: Calls the hub makes, so a key without them is refused before it is saved.
REQUIRED = (
    "note.read",  # a retried write-back looks for its earlier note first
    "search",
    "conversation.read",
    "conversation.update",
    "customer.read",
    "note.create",
    "metadata.read",
    "metadata.update",
    "user.read",
)
#: The keys `PUT /v1/metadata/{resource}` accepts (KUSTOMER-API.md §5).
METADATA_PUT_KEYS = ("properties", "standardProperties", "relationships", "validations")
#: Conversations per `GET /v1/conversations/{id,id,…}` (24-character ids: a 2.5 kB URL).
FETCH_BATCH = 100
CUSTOMER_CACHE = 5000
SEEN_IDS = 20000


class KustomerSettings(Schema):
    """The connect form: the Kustomer URL and an API key that never expires."""

    url = fields.String(
        required=True,
        metadata={
            "label": "Kustomer URL",
            "placeholder": "https://acme.kustomerapp.com",
            "help": "The address you sign in to Kustomer at (EU accounts: "
            "https://acme.kustomerapp.eu).",
        },
    )
    api_key = fields.String(
        required=True,
        metadata={
            "label": "API key",
            "secret": True,
            "help": "Stored encrypted; never shown again.",
        },
    )


def parse_time(value: str | None) -> datetime | None:
    """A Kustomer timestamp (`2025-03-21T20:20:11.424Z`) as an aware datetime."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def token_expiry(secrets: dict[str, Any]) -> str | None:
    """The API key's own expiry (the JWT `exp` claim) as an ISO date, if it has one."""
    parts = str(secrets.get("api_key", "")).split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        exp = payload.get("exp") if isinstance(payload, dict) else None
        return datetime.fromtimestamp(float(exp), UTC).isoformat() if exp else None
    except (ValueError, TypeError, OverflowError):
        return None


def requester_address(emails: list[Any]) -> str | None:
    """The customer's first valid address, a verified or primary one first (normalised).

    Kustomer keeps addresses as typed by agents and imports (`" Jane.Doe@Example.COM "`),
    and a customer may have an invalid first address and a valid second one.
    """
    entries = [e for e in emails if isinstance(e, dict) and isinstance(e.get("email"), str)]
    ranked = sorted(entries, key=lambda e: (not e.get("verified"), str(e.get("type")) != "primary"))
    # None valid: the first one as given, so the pipeline says "invalid email".
    return first_valid(e["email"] for e in ranked) or (ranked[0]["email"] if ranked else None)


#: Kustomer's own CSAT statuses that mean the customer was not asked after all.
NATIVE_NOT_SENT = {"", "canceled", "cancelled"}


def native_survey(attributes: dict[str, Any]) -> str | None:
    """The status of Kustomer's own satisfaction survey on the conversation, if any."""
    level = attributes.get("satisfactionLevel")
    if not isinstance(level, dict):
        return None
    status = str(level.get("status") or "")
    return None if status in NATIVE_NOT_SENT else status


def iso(moment: datetime) -> str:
    """An aware datetime as Kustomer's UTC ISO format."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


class Kustomer(Helpdesk):
    """Kustomer (kustomer.com), through its REST API."""

    key = "kustomer"
    title = "Kustomer"
    settings_schema = KustomerSettings
    help = (
        "Create the API key in Kustomer under Settings > Security > API keys > New API key.\n"
        "Give it these roles: "
        + ", ".join(ROLES[need][0] for need in REQUIRED)
        + " (or the broad legacy roles org.user and org.admin).\n"
        'Set its expiration to "No Expiration": surveys stop when the key expires.'
    )
    logo = (
        "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 56 56'%3E"
        "%3Crect width='56' height='56' rx='12' fill='%231d2433'/%3E%3Ctext x='28' y='38' "
        "font-family='Arial,sans-serif' font-size='28' font-weight='700' fill='%23ffffff' "
        "text-anchor='middle'%3EK%3C/text%3E%3C/svg%3E"
    )
    page_size = PAGE_SIZE

    def __init__(
        self,
        settings: dict[str, Any],
        secrets: dict[str, Any],
        context: HelpdeskContext | None = None,
        client: KustomerClient | None = None,
    ) -> None:
        super().__init__(settings, secrets, context)
        self.base_url = api_base(settings.get("url", ""), self.context.allowed_urls)
        # Kustomer's limits are per org, so connections to one org share one budget.
        org_host = self.base_url.split("://", 1)[1].split("/", 1)[0]
        budget = RateBudget(self.context.redis, org_host) if self.context.redis else None
        self.client = client or KustomerClient(
            self.base_url,
            secrets.get("api_key", ""),
            budget,
            on_response=self.context.count_request,
        )

    # -- connection -------------------------------------------------------------------

    def verify(self) -> ConnectionCheck:
        body = (
            self.client.request(
                "GET", "/auth/tokens/current", need="search", retry_unreachable=False
            )
            or {}
        )
        attributes = (body.get("data") or {}).get("attributes") or {}
        roles = set(attributes.get("roles") or ())
        missing = tuple(need for need in REQUIRED if not has_role(roles, need))
        warnings = []
        expires = (
            attributes.get("expiresAt") or attributes.get("expireAt") or token_expiry(self.secrets)
        )
        if expires:
            warnings.append(
                f"This key expires on {expires[:10]}; surveys stop then. Create a key with "
                "no expiration, as the set-up guide asks."
            )
        host = self.base_url.split("://", 1)[1].split("/", 1)[0]
        return ConnectionCheck(
            account=host.replace(".api.", "."),
            key_name=attributes.get("name") or f"…{attributes.get('lastTokenChars', '')}",
            missing_roles=tuple(f"{ROLES[need][0]} (or {ROLES[need][-1]})" for need in missing),
            warnings=tuple(warnings),
        )

    def agents(self) -> Iterator[Agent]:
        path = f"/users?pageSize={self.page_size}"
        for page in self.client.pages("GET", path, need="user.read"):
            for user in page.get("data") or ():
                attributes = user.get("attributes") or {}
                if attributes.get("userType", "user") != "user" or attributes.get("deletedAt"):
                    continue
                if attributes.get("deleted"):
                    continue
                yield Agent(
                    id=user["id"],
                    name=attributes.get("displayName") or attributes.get("name") or "",
                    email=attributes.get("email") or "",
                )

    # -- scanning -------------------------------------------------------------------

    def _search_body(self, window: ScanWindow, updated_from: str | None) -> dict[str, Any]:
        criteria: list[dict[str, Any]] = [
            {"conversation_last_done_created_at": {"gte": iso(window.resolved_after)}},
            {"conversation_last_done_created_at": {"lte": iso(window.resolved_before)}},
        ]
        if updated_from:
            criteria.append({"conversation_updated_at": {"gte": updated_from}})
        return {
            "queryContext": "conversation",
            "and": criteria,
            "sort": [{"conversation_updated_at": "asc"}],
        }

    def scan(
        self, window: ScanWindow, wants: Callable[[Ticket], bool] | None = None
    ) -> Iterator[Ticket]:
        """Stream conversations last resolved in the window, oldest `updatedAt` first.

        Paging is by keyset: after each page the search is asked again from the last
        `updatedAt` seen (`gte`), dropping the repeats. Offsets would skip a conversation
        whenever one already returned is updated during the scan, and Kustomer's search
        stops at page 100. Page numbers are used only while a whole page shares one
        timestamp. Memory stays bounded: a window of recent ids and an LRU of customers.
        """
        customers: OrderedDict[str, dict[str, Any]] = OrderedDict()
        seen: set[str] = set()
        seen_order: deque[str] = deque()
        updated_from: str | None = None
        page = 1
        while True:
            url = f"/customers/search?page={page}&pageSize={self.page_size}"
            body = self._search_body(window, updated_from)
            result = self.client.request("POST", url, need="search", json=body, search=True) or {}
            last_updated = None
            fresh = []
            for conversation in result.get("data") or ():
                last_updated = (conversation.get("attributes") or {}).get("updatedAt")
                if conversation["id"] in seen:
                    continue
                seen.add(conversation["id"])
                seen_order.append(conversation["id"])
                if len(seen_order) > SEEN_IDS:
                    seen.discard(seen_order.popleft())
                fresh.append(self._ticket(conversation, window, customers, skip_requester=True))
            announce_page(wants, fresh)
            for ticket in fresh:
                yield self._requester(ticket, window, customers, wants=wants)
            if not (result.get("links") or {}).get("next"):
                return
            if last_updated is not None and last_updated != updated_from:
                updated_from, page = last_updated, 1
                continue
            page += 1  # a whole page shares one timestamp: step through it
            if page > LAST_PAGE:
                raise Unavailable(
                    f"More than {self.page_size * LAST_PAGE} Kustomer conversations share "
                    f"the update time {updated_from}; the scan cannot page past them."
                )

    def ticket_link(self, ticket: Ticket) -> str | None:
        """The conversation in Kustomer's web app, under its customer (the app's own
        address form); None without the customer or on a regional API host."""
        customer_id = (ticket.extra or {}).get("customer_id")
        web = web_base(self.base_url)
        if not customer_id or web is None:
            return None
        return (
            f"{web}/app/customers/{quote(customer_id, safe='')}/event/{quote(ticket.id, safe='')}"
        )

    def fetch_ticket(self, ticket_id: str) -> Ticket:
        body = self.client.request("GET", f"/conversations/{ticket_id}", need="conversation.read")
        return self._ticket((body or {})["data"], None, OrderedDict())

    fetch_batch_size = FETCH_BATCH

    def fetch_tickets(self, ticket_ids: Sequence[str]) -> dict[str, Ticket]:
        """Conversations by id, `FETCH_BATCH` per request (Kustomer's comma-separated
        ids form), without customer lookups: the hub sends to the address it recorded.
        """
        found: dict[str, Ticket] = {}
        unique = list(dict.fromkeys(ticket_ids))
        chunks = [unique[i : i + FETCH_BATCH] for i in range(0, len(unique), FETCH_BATCH)]
        while chunks:
            chunk = chunks.pop()
            try:
                body = self.client.request(
                    "GET", f"/conversations/{','.join(chunk)}", need="conversation.read"
                )
            except NotFound:
                # One of them is gone and the whole answer is a 404: halve the batch
                # until the gone ones are found (a few requests, not one per id).
                if len(chunk) > 1:
                    middle = len(chunk) // 2
                    chunks.extend([chunk[:middle], chunk[middle:]])
                continue
            data = (body or {}).get("data") or []
            for conversation in data if isinstance(data, list) else [data]:
                if isinstance(conversation, dict) and conversation.get("id") in chunk:
                    found[conversation["id"]] = self._ticket(
                        conversation, None, OrderedDict(), skip_requester=True
                    )
        return found

    def _ticket(
        self,
        conversation: dict[str, Any],
        window: ScanWindow | None,
        customers: OrderedDict[str, dict[str, Any]],
        skip_requester: bool = False,
        wants: Callable[[Ticket], bool] | None = None,
    ) -> Ticket:
        attributes = conversation.get("attributes") or {}
        # The customer's first inbound message decides the channel. Without one, or when
        # it answered an agent's message, an agent started the conversation (outbound):
        # `channels` would name the channel the agent wrote through.
        first_in = attributes.get("firstMessageIn") or {}
        started_by_agent = (
            attributes.get("direction") == "out"
            or not first_in
            or first_in.get("directionType") not in (None, "initial-in")
        )
        last_done = attributes.get("lastDone") or {}
        assignees = last_done.get("assignedUsers") or attributes.get("assignedUsers") or []
        customer_id = (
            ((conversation.get("relationships") or {}).get("customer") or {}).get("data") or {}
        ).get("id")
        ticket = Ticket(
            id=conversation["id"],
            status=attributes.get("status") or "",
            channel=first_in.get("channel"),
            created_at=parse_time(attributes.get("createdAt")),
            updated_at=parse_time(attributes.get("updatedAt")),
            resolved_at=parse_time(last_done.get("createdAt")),
            requester_email=None,
            assignee_id=assignees[0] if assignees else None,
            tags=tuple(attributes.get("tags") or ()),
            started_by_agent=started_by_agent,
            helpdesk_survey=native_survey(attributes),
            extra={"customer_id": customer_id},
        )
        if skip_requester:
            return ticket
        return self._requester(ticket, window, customers, wants=wants)

    def _requester(
        self,
        ticket: Ticket,
        window: ScanWindow | None,
        customers: OrderedDict[str, dict[str, Any]],
        wants: Callable[[Ticket], bool] | None = None,
    ) -> Ticket:
        """`ticket` with its requester's details, when `wants` it (or, without `wants`,
        when it is in the window's channels and statuses): one customer look-up."""
        customer_id = (ticket.extra or {}).get("customer_id")
        if not customer_id:
            return ticket
        started_by_agent = ticket.started_by_agent
        if wants is not None:
            wanted = wants(ticket)
        else:
            wanted = not started_by_agent and (
                window is None
                or (
                    (window.channels is None or ticket.channel in window.channels)
                    and (window.statuses is None or ticket.status in window.statuses)
                )
            )
        if not wanted:
            return ticket
        customer = self._customer(customer_id, customers)
        return dataclasses.replace(
            ticket,
            requester_email=requester_address(customer.get("emails") or []),
            requester_name=customer.get("displayName") or customer.get("name") or "",
            requester_locale=customer.get("locale"),
        )

    def _customer(
        self, customer_id: str, cache: OrderedDict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        if customer_id in cache:
            cache.move_to_end(customer_id)
            return cache[customer_id]
        try:
            body = self.client.request("GET", f"/customers/{customer_id}", need="customer.read")
        except NotFound:
            # A deleted or merged customer: the ticket has no requester to survey, and
            # the rest of the scan goes on.
            body = None
        full = ((body or {}).get("data") or {}).get("attributes") or {}
        # Keep only what a ticket needs: the cache may hold thousands of customers.
        attributes = {key: full.get(key) for key in ("emails", "name", "displayName", "locale")}
        cache[customer_id] = attributes
        if len(cache) > CUSTOMER_CACHE:
            cache.popitem(last=False)
        return attributes

    # -- write-back -----------------------------------------------------------------

    def prepare(self, attribute_name: str, title: str) -> None:
        """Define the attribute with a read-merge-write, keeping every other attribute.

        The GET answers the whole metadata document, read-only fields (`name`,
        `updatedAt`, …) included; the PUT takes only its documented keys, so only those
        are sent back, merged with the new property.
        """
        body = self.client.request("GET", "/metadata/conversation", need="metadata.read") or {}
        document = (body.get("data") or {}).get("attributes") or {}
        properties = dict(document.get("properties") or {})
        if attribute_name in properties:
            return
        properties[attribute_name] = {"displayName": title}
        # Send back the other documented parts as read, in case the PUT replaces the
        # whole document rather than merging.
        update = {key: document[key] for key in METADATA_PUT_KEYS if document.get(key)}
        update["properties"] = properties
        self.client.request("PUT", "/metadata/conversation", need="metadata.update", json=update)

    def write_back(
        self,
        ticket_id: str,
        attribute_name: str,
        value: int,
        note: str | None,
        note_id: str,
        retry: bool,
    ) -> WriteResult:
        helpdesk_note_id = None
        if note is not None:
            existing = self._find_note(ticket_id, note_id) if retry else None
            if existing:
                helpdesk_note_id = existing
            else:
                created = self.client.request(
                    "POST",
                    f"/conversations/{ticket_id}/notes",
                    need="note.create",
                    json={"body": note, "externalId": note_id},
                    idempotent=False,
                )
                helpdesk_note_id = ((created or {}).get("data") or {}).get("id")
        patched = self.client.request(
            "PATCH",
            f"/conversations/{ticket_id}",
            need="conversation.update",
            json={"custom": {attribute_name: value}},
        )
        # The PATCH comes last, so its `updatedAt` is the one our writes left behind.
        attributes = ((patched or {}).get("data") or {}).get("attributes") or {}
        try:
            updated_at = parse_time(attributes.get("updatedAt"))
        except (TypeError, ValueError):
            updated_at = None
        return WriteResult(note_id=helpdesk_note_id, updated_at=updated_at)

    def _find_note(self, ticket_id: str, note_id: str) -> str | None:
        path = f"/conversations/{ticket_id}/notes?pageSize={self.page_size}"
        for page in self.client.pages("GET", path, need="note.read"):
            for item in page.get("data") or ():
                if (item.get("attributes") or {}).get("externalId") == note_id:
                    return item["id"]
        return None

    def erase(self, traces: Sequence[TicketTraces]) -> list[TicketTraces]:
        """Clear the hub's custom attributes (`null` clears a value, KUSTOMER-API.md §5);
        the notes stay: Kustomer's documented API has no way to delete or edit a note.
        """
        left = []
        for trace in traces:
            if trace.attribute_names:
                try:
                    self.client.request(
                        "PATCH",
                        f"/conversations/{trace.ticket_id}",
                        need="conversation.update",
                        json={"custom": dict.fromkeys(trace.attribute_names)},
                    )
                except NotFound:
                    continue  # the conversation is gone, and its notes with it
            if trace.note_ids:
                left.append(TicketTraces(trace.ticket_id, note_ids=trace.note_ids))
        return left

    # -- webhooks -------------------------------------------------------------------

    def register_webhook(self, url: str) -> tuple[str, str]:
        """Subscribe `url` to conversation updates; return (webhook id, signing token).

        An existing subscription for `url` is reused: a retry after a lost answer must not
        use up one of the org's five webhooks.
        """
        for page in self.client.pages("GET", "/outbound-webhooks", need="outbound_webhook"):
            for hook in page.get("data") or ():
                attributes = hook.get("attributes") or {}
                if attributes.get("url") == url and attributes.get("token"):
                    return hook["id"], attributes["token"]
        body = self.client.request(
            "POST",
            "/outbound-webhooks",
            need="outbound_webhook",
            json={
                "name": "SurveyHub",
                "url": url,
                "events": ["kustomer.conversation.update"],
            },
            idempotent=False,
        )
        data = (body or {}).get("data") or {}
        return data["id"], (data.get("attributes") or {})["token"]

    def remove_webhook(self, webhook_id: str) -> None:
        """Unsubscribe (e.g. when the connection is deleted)."""
        self.client.request("DELETE", f"/outbound-webhooks/{webhook_id}", need="outbound_webhook")
