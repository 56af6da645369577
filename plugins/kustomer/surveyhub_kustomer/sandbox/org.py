"""The sandbox org's data: users, customers, conversations, notes, metadata, webhooks."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

ALL_ROLES = (
    "org.permission.search.create",
    "org.permission.conversation.read",
    "org.permission.conversation.update",
    "org.permission.customer.read",
    "org.permission.note.create",
    "org.permission.note.read",
    "org.permission.metadata.read",
    "org.permission.metadata.update",
    "org.permission.user.read",
    "org.permission.outbound_webhook.create",
    "org.permission.outbound_webhook.read",
    "org.permission.outbound_webhook.delete",
)
EXCLUDED_TAG = "5f0000000000000000000e01"  # the "no-survey" tag
UNSUBSCRIBED = "unsubscribed@example.com"  # tests put this address on the suppression list


def stamp(moment: datetime) -> str:
    """Kustomer's timestamp format."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


@dataclass
class ApiKey:
    token: str
    name: str
    roles: tuple[str, ...] = ALL_ROLES
    pod: str = "prod1"
    expires_at: str | None = None


@dataclass
class Org:
    """All of one fake org's state, safe to use from the server's threads."""

    name: str = "acme"
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    keys: dict[str, ApiKey] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    conversations: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    webhooks: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def new_id(self) -> str:
        return f"{0x67DD0000 + next(self._ids):024x}"

    def add_user(self, name: str, email: str, user_type: str = "user", deleted: bool = False):
        user_id = self.new_id()
        self.users[user_id] = {
            "name": name,
            "displayName": name,
            "email": email,
            "userType": user_type,
            "roles": [],
            "createdAt": stamp(self.now - timedelta(days=400)),
            **({"deletedAt": stamp(self.now - timedelta(days=3))} if deleted else {}),
        }
        return user_id

    def add_customer(
        self,
        name: str,
        emails: list[str],
        locale: str | None = None,
        verified: int | None = 0,
    ) -> str:
        """A customer with `emails` in order; the one at index `verified` is verified."""
        customer_id = self.new_id()
        self.customers[customer_id] = {
            "name": name,
            "displayName": name,
            "emails": [
                {"email": email, "type": "home", "verified": i == verified, "id": None}
                for i, email in enumerate(emails)
            ],
            "locale": locale,
            "custom": {},
        }
        return customer_id

    def add_conversation(
        self,
        customer_id: str,
        *,
        status: str = "done",
        channel: str = "email",
        resolved_ago: timedelta | None = timedelta(days=3),
        updated_ago: timedelta = timedelta(hours=60),
        assignee: str | None = None,
        tags: tuple[str, ...] = (),
        name: str = "Order question",
        reopened: bool = False,
        outbound: bool = False,
        replied: bool = False,
        native_survey: str | None = None,
    ) -> str:
        """A conversation; `outbound` ones were started by an agent (no inbound message),
        `replied` ones too, but the customer has answered the agent's email since, and
        `native_survey` gives Kustomer's own CSAT status on it."""
        conversation_id = self.new_id()
        created = self.now - max(updated_ago, resolved_ago or timedelta(0)) - timedelta(hours=5)
        last_done = None
        if resolved_ago is not None:
            last_done = {
                "createdAt": stamp(self.now - resolved_ago),
                "createdBy": assignee,
                "createdByTeams": [],
                "assignedUsers": [assignee] if assignee else [],
                "assignedTeams": [],
                "time": 27122,
                "businessTime": 27122,
            }
        self.conversations[conversation_id] = {
            "customer_id": customer_id,
            "attributes": {
                "name": name,
                "status": status,
                "priority": 3,
                "direction": "out" if outbound or replied else "in",
                "channels": [channel],
                "messageCount": 4,
                "noteCount": 0,
                "doneCount": 1 if resolved_ago is not None else 0,
                "reopenCount": 1 if reopened else 0,
                "createdAt": stamp(created),
                "updatedAt": stamp(self.now - updated_ago),
                # An agent's outbound conversation has no inbound message yet.
                "firstMessageIn": None
                if outbound
                else {
                    "id": self.new_id(),
                    "channel": channel,
                    "sentAt": stamp(created),
                    "directionType": "response-in" if replied else "initial-in",
                },
                "lastDone": last_done,
                "assignedUsers": [assignee] if assignee else [],
                "assignedTeams": [],
                "tags": list(tags),
                "satisfaction": 0,
                **(
                    {
                        "satisfactionLevel": {
                            "status": native_survey,
                            "rating": 9 if native_survey in ("rated", "commented") else None,
                            "channel": "email",
                            "sentAt": stamp(self.now - timedelta(hours=40)),
                        }
                    }
                    if native_survey
                    else {}
                ),
                "custom": {},
                "defaultLang": "en_us",
                "rev": 3,
            },
        }
        self.notes[conversation_id] = []
        return conversation_id


@dataclass
class Seeded:
    """Which seeded conversations a 48-hour email survey must send to, and must skip."""

    org: Org
    api_key: str
    eligible: list[str]
    skipped: dict[str, str]
    #: Eligible conversations whose customer's addresses are awkward, with the address
    #: the survey must go to.
    addresses: dict[str, str] = field(default_factory=dict)


def seed(
    now: datetime | None = None, eligible: int = 6, api_key: str = "sandbox-api-key"
) -> Seeded:
    """A realistic org: resolved email conversations older than 48 h, plus ones to skip.

    `skipped` maps each conversation that a 48-hour email NPS survey (with
    `EXCLUDED_TAG` excluded and `UNSUBSCRIBED` unsubscribed) must skip, to the reason the
    pipeline records. One more conversation, resolved 2 hours ago, is not due yet.
    """
    org = Org(now=now or datetime.now(UTC).replace(microsecond=0))
    org.keys[api_key] = ApiKey(api_key, "SurveyHub sandbox key")
    agent = org.add_user("Alex Agent", "alex@acme.example")
    org.add_user("Bea Agent", "bea@acme.example")
    org.add_user("SurveyHub key", "", user_type="machine")
    org.add_user("Former Agent", "former@acme.example", deleted=True)
    # The whole document as Kustomer's GET answers it, read-only fields included.
    org.metadata["conversation"] = {
        "name": "conversation",
        "properties": {"orderNumberStr": {"displayName": "Order number", "type": "string"}},
        "standardProperties": {"priority": {"displayName": "Priority"}},
        "relationships": {},
        "validations": [],
        "createdAt": stamp(org.now - timedelta(days=900)),
        "updatedAt": stamp(org.now - timedelta(days=30)),
    }
    ids = []
    for n in range(eligible):
        emails = [f"customer{n}@example.com"] + ([f"alt{n}@example.com"] if n % 2 else [])
        customer = org.add_customer(f"Customer {n}", emails, locale="de" if n == 1 else None)
        # Pairs share one updatedAt, as many real conversations do.
        ids.append(
            org.add_conversation(
                customer,
                assignee=agent,
                updated_ago=timedelta(hours=50 + n // 2),
                resolved_ago=timedelta(hours=50 + n // 2, minutes=1),
            )
        )
    addresses = {}
    if eligible:
        # Awkward but valid addresses: surveyed, at the address in its normal form.
        for name, emails, verified, address in (
            ("Spaces", [" Jane.Doe@Example.COM "], 0, "jane.doe@example.com"),
            ("Second", ["not an address", "second@example.com"], None, "second@example.com"),
            ("Verified", ["old@example.com", "verified@example.com"], 1, "verified@example.com"),
        ):
            conversation = org.add_conversation(
                org.add_customer(name, emails, verified=verified),
                assignee=agent,
                updated_ago=timedelta(hours=52),
                resolved_ago=timedelta(hours=53),
            )
            ids.append(conversation)
            addresses[conversation] = address
    skipped = {}

    def person(name: str, emails: list[str]) -> str:
        return org.add_customer(name, emails)

    skipped[
        org.add_conversation(
            person("Outbound", ["outbound@example.com"]), assignee=agent, outbound=True
        )
    ] = "started by an agent"
    # An agent's email the customer answered: an inbound email exists, but it is a reply.
    skipped[
        org.add_conversation(
            person("Replied", ["replied@example.com"]), assignee=agent, replied=True
        )
    ] = "started by an agent"
    skipped[
        org.add_conversation(
            person("Native", ["native@example.com"]), assignee=agent, native_survey="rated"
        )
    ] = "surveyed by the helpdesk"
    skipped[
        org.add_conversation(
            person("Invalid", ["postmaster,customer9@example.com"]), assignee=agent
        )
    ] = "invalid email"

    skipped[
        org.add_conversation(person("Chat", ["chat@example.com"]), channel="chat", assignee=agent)
    ] = "wrong channel"
    skipped[
        org.add_conversation(
            person("Reopened", ["reopened@example.com"]),
            status="open",
            assignee=agent,
            reopened=True,
        )
    ] = "not resolved"
    skipped[
        org.add_conversation(
            person("Recent", ["recent@example.com"]), assignee=agent, updated_ago=timedelta(hours=1)
        )
    ] = "updated within the delay"
    skipped[
        org.add_conversation(
            person("Tagged", ["tagged@example.com"]), assignee=agent, tags=(EXCLUDED_TAG,)
        )
    ] = "excluded tag"
    skipped[org.add_conversation(person("No Email", []), assignee=agent)] = "no email"
    skipped[org.add_conversation(person("Unassigned", ["unassigned@example.com"]))] = (
        "no human assignee"
    )
    skipped[org.add_conversation(person("Unsubscribed", [UNSUBSCRIBED]), assignee=agent)] = (
        "unsubscribed"
    )
    if ids:
        # The first eligible customer again, a little later: inside the NPS cooldown.
        again = org.conversations[ids[0]]["customer_id"]
        skipped[
            org.add_conversation(
                again,
                assignee=agent,
                updated_ago=timedelta(hours=49),
                resolved_ago=timedelta(hours=49),
            )
        ] = "cooldown"
    # Resolved too recently to be due yet: not scanned at all.
    org.add_conversation(
        person("Not Due", ["notdue@example.com"]),
        assignee=agent,
        updated_ago=timedelta(hours=2),
        resolved_ago=timedelta(hours=2),
    )
    return Seeded(org=org, api_key=api_key, eligible=ids, skipped=skipped, addresses=addresses)
