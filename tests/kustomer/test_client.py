"""The Kustomer client and connector against `responses` with payloads shaped like the API."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC
from datetime import datetime
from datetime import timedelta

import pytest
import responses

from hub.helpdesk import BadCredentials
from hub.helpdesk import BadRequest
from hub.helpdesk import HelpdeskContext
from hub.helpdesk import MissingPermission
from hub.helpdesk import NotFound
from hub.helpdesk import RateLimited
from hub.helpdesk import ScanWindow
from hub.helpdesk import Ticket
from hub.helpdesk import Unavailable
from hub.helpdesk import WriteResult
from hub.models import utcnow
from surveyhub_kustomer.client import KustomerClient
from surveyhub_kustomer.connector import Kustomer
from surveyhub_kustomer.connector import parse_time
from surveyhub_kustomer.connector import requester_address
from tests.conftest import free_port
from tests.kustomer.clock import Clock
from tests.kustomer.payloads import BASE
from tests.kustomer.payloads import conversation
from tests.kustomer.payloads import customer
from tests.kustomer.payloads import search_page
from tests.kustomer.payloads import token

NOT_FOUND = {"errors": [{"status": 404, "title": "Not Found", "detail": "Conversation not found"}]}

NOW = 1_800_000_000.0
WINDOW = ScanWindow(
    resolved_after=datetime(2026, 10, 1, tzinfo=UTC),
    resolved_before=datetime(2026, 11, 1, tzinfo=UTC),
    channels=("email",),
)


@pytest.fixture
def clock():
    return Clock(NOW)


@pytest.fixture
def kustomer(clock):
    client = KustomerClient(BASE, "secret-key", sleep=clock.sleep, clock=clock)
    return Kustomer(
        {"url": "https://acme.kustomerapp.com"}, {"api_key": "secret-key"}, client=client
    )


@responses.activate
def test_requests_carry_the_key_and_a_user_agent(kustomer):
    responses.get(f"{BASE}/conversations/x1", json={"data": conversation("x1")})
    responses.get(f"{BASE}/customers/c1", json=customer("c1", ["jane@example.com"]))
    ticket = kustomer.fetch_ticket("x1")
    sent = responses.calls[0].request
    assert sent.headers["Authorization"] == "Bearer secret-key"
    assert sent.headers["User-Agent"].startswith("SurveyHub-Kustomer/")
    assert (ticket.id, ticket.status, ticket.channel) == ("x1", "done", "email")
    assert ticket.requester_email == "jane@example.com"
    assert ticket.assignee_id == "5f00000000000000000000a1"
    assert ticket.resolved_at == datetime(2026, 10, 20, 10, 0, tzinfo=UTC)


@responses.activate
def test_agents_follow_relative_next_links_and_skip_machines_and_deleted(kustomer):
    def user(uid, user_type="user", **extra):
        attributes = {"name": uid, "displayName": uid.title(), "email": f"{uid}@acme.example"}
        return {
            "type": "user",
            "id": uid,
            "attributes": {"userType": user_type, **attributes, **extra},
        }

    responses.get(
        f"{BASE}/users?pageSize=100",
        json={
            "meta": {"pageSize": 100, "page": 1},
            "data": [user("ann"), user("bot", "machine")],
            "links": {"next": "/v1/users?page=2&pageSize=100"},
        },
    )
    responses.get(
        f"{BASE}/users?page=2&pageSize=100",
        json={
            "meta": {"pageSize": 100, "page": 2},
            "data": [user("bob"), user("old", deletedAt="2026-01-01T00:00:00.000Z")],
            "links": {"next": None},
        },
    )
    assert [a.name for a in kustomer.agents()] == ["Ann", "Bob"]


class SearchIndex:
    """Kustomer's search over a list of conversations: `gte` on updatedAt, sorted, paged."""

    def __init__(self, conversations):
        self.conversations = conversations
        self.pages = []

    def __call__(self, request):
        body = json.loads(request.body)
        page, size = int(request.params["page"]), int(request.params["pageSize"])
        self.pages.append(page)
        if page > 100:
            return 400, {}, json.dumps({"errors": [{"code": "bad_request", "message": "page"}]})
        floor = next(
            (
                c["conversation_updated_at"]["gte"]
                for c in body["and"]
                if "gte" in c.get("conversation_updated_at", {})
            ),
            "",
        )
        found = sorted(
            (c for c in self.conversations if c["attributes"]["updatedAt"] >= floor),
            key=lambda c: (c["attributes"]["updatedAt"], c["id"]),
        )
        chunk = found[(page - 1) * size : page * size]
        more = page * size < len(found)
        return 200, {}, json.dumps(search_page(chunk, page, page + 1 if more else None))


def stamp(n: int) -> str:
    return f"2026-10-10T{n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}.000Z"


@responses.activate
def test_scan_pages_by_keyset_and_never_reaches_page_101(kustomer):
    # 12,000 conversations: more than Kustomer's 100 pages of 100.
    index = SearchIndex([conversation(f"a{n}", stamp(n), customer_id="c1") for n in range(12_000)])
    responses.add_callback(responses.POST, f"{BASE}/customers/search", callback=index)
    responses.get(f"{BASE}/customers/c1", json=customer("c1", ["c1@example.com"]))
    ids = [t.id for t in kustomer.scan(WINDOW)]
    assert ids == [f"a{n}" for n in range(12_000)]
    assert max(index.pages) == 1  # every page is the first page of a keyset query
    assert len(index.pages) <= 12_000 // 99 + 1  # about N / pageSize searches
    customer_calls = [c for c in responses.calls if "/customers/c1" in c.request.url]
    assert len(customer_calls) == 1  # one per distinct customer, cached for the scan


@responses.activate
def test_a_conversation_updated_during_the_scan_skips_nothing(kustomer):
    conversations = [conversation(f"a{n}", stamp(n)) for n in range(250)]
    index = SearchIndex(conversations)
    responses.add_callback(responses.POST, f"{BASE}/customers/search", callback=index)
    responses.get(f"{BASE}/customers/c1", json=customer("c1", ["c1@example.com"]))
    found = []
    for ticket in kustomer.scan(WINDOW):
        found.append(ticket.id)
        if ticket.id == "a10":  # an agent edits an early conversation mid-scan
            conversations[3]["attributes"]["updatedAt"] = stamp(10_000)
    assert sorted(found, key=lambda i: int(i[1:])) == [f"a{n}" for n in range(250)]


@responses.activate
def test_many_conversations_sharing_one_timestamp_are_paged_through(kustomer):
    same = "2026-10-10T00:00:00.000Z"
    index = SearchIndex([conversation(f"s{n:03d}", same) for n in range(250)])
    responses.add_callback(responses.POST, f"{BASE}/customers/search", callback=index)
    responses.get(f"{BASE}/customers/c1", json=customer("c1", ["c1@example.com"]))
    assert len({t.id for t in kustomer.scan(WINDOW)}) == 250
    assert index.pages == [1, 1, 2, 3]  # the keyset query, then its pages


@responses.activate
def test_a_deleted_customer_does_not_stop_the_scan(kustomer):
    items = [conversation("x1", customer_id="gone"), conversation("x2", customer_id="c2")]
    responses.post(f"{BASE}/customers/search", json=search_page(items, 1, None))
    responses.get(
        f"{BASE}/customers/gone",
        status=404,
        json={"errors": [{"code": "not_found", "message": "Customer not found"}]},
    )
    responses.get(f"{BASE}/customers/c2", json=customer("c2", ["c2@example.com"]))
    tickets = list(kustomer.scan(WINDOW))
    assert [(t.id, t.requester_email) for t in tickets] == [("x1", None), ("x2", "c2@example.com")]


@responses.activate
def test_scan_skips_the_customer_lookup_for_channels_that_cannot_be_surveyed(kustomer):
    items = [conversation("x1", channel="chat"), conversation("x2", customer_id="c9")]
    responses.post(f"{BASE}/customers/search", json=search_page(items, 1, None))
    responses.get(f"{BASE}/customers/c9", json=customer("c9", []))
    tickets = list(kustomer.scan(WINDOW))
    assert [(t.channel, t.requester_email) for t in tickets] == [("chat", None), ("email", None)]
    assert sum("/customers/c" in c.request.url for c in responses.calls) == 1


@responses.activate
def test_429_waits_for_the_reset_then_succeeds(kustomer, clock):
    url = f"{BASE}/conversations/x1"
    responses.get(
        url,
        status=429,
        json={"errors": [{"code": "too_many_requests", "message": "Rate limit exceeded"}]},
        headers={
            "x-ratelimit-limit": "300",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": str(int(NOW + 17)),
        },
    )
    responses.get(url, json={"data": conversation("x1")})
    responses.get(f"{BASE}/customers/c1", json=customer("c1", ["a@example.com"]))
    assert kustomer.fetch_ticket("x1").id == "x1"
    assert clock.slept == [17.0]


@responses.activate
def test_429_without_a_reset_backs_off_with_jitter(kustomer, clock):
    url = f"{BASE}/conversations/x1"
    responses.get(url, status=429, json={"errors": [{"code": "too_many_requests"}]})
    responses.get(url, status=429, json={"errors": [{"code": "too_many_requests"}]})
    responses.get(url, json={"data": conversation("x1")})
    responses.get(f"{BASE}/customers/c1", json=customer("c1", ["a@example.com"]))
    kustomer.fetch_ticket("x1")
    assert 0.5 <= clock.slept[0] <= 1.0 and 1.0 <= clock.slept[1] <= 2.0


@responses.activate
def test_a_reset_too_far_away_is_handed_to_the_caller(kustomer):
    responses.get(
        f"{BASE}/conversations/x1",
        status=429,
        json={"errors": [{"code": "too_many_requests"}]},
        headers={"x-ratelimit-reset": str(int(NOW + 600))},
    )
    with pytest.raises(RateLimited) as info:
        kustomer.fetch_ticket("x1")
    assert info.value.retry_at == NOW + 600


@responses.activate
def test_5xx_is_retried(kustomer, clock):
    url = f"{BASE}/conversations/x1"
    responses.get(url, status=502, body="Bad Gateway")
    responses.get(url, status=503, json={"errors": [{"code": "unavailable", "message": "busy"}]})
    responses.get(url, json={"data": conversation("x1")})
    responses.get(f"{BASE}/customers/c1", json=customer("c1", ["a@example.com"]))
    assert kustomer.fetch_ticket("x1").id == "x1"
    assert len(clock.slept) == 2


@responses.activate
def test_5xx_that_never_ends_raises_unavailable(kustomer):
    responses.get(f"{BASE}/conversations/x1", status=500, body="oops")
    with pytest.raises(Unavailable, match="500"):
        kustomer.fetch_ticket("x1")
    assert len(responses.calls) == 5


@responses.activate
def test_a_note_post_is_never_blindly_retried(kustomer):
    responses.post(f"{BASE}/conversations/x1/notes", status=502, body="Bad Gateway")
    with pytest.raises(Unavailable):
        kustomer.write_back("x1", "surveyhubNpsScoreNum", 9, "NPS 9/10", "sh:1", retry=False)
    assert len(responses.calls) == 1


@responses.activate
def test_jsonapi_error_shape(kustomer):
    responses.patch(
        f"{BASE}/conversations/x1",
        status=400,
        json={
            "errors": [
                {
                    "status": 400,
                    "code": "validation",
                    "title": "Bad Request",
                    "detail": "Validation failed",
                    "meta": {
                        "subErrors": [
                            {"title": "must be a number", "source": {"pointer": "/custom/scoreNum"}}
                        ]
                    },
                }
            ]
        },
    )
    with pytest.raises(BadRequest) as info:
        kustomer.write_back("x1", "scoreNum", 9, None, "sh:1", retry=False)
    assert "Validation failed" in str(info.value)
    assert "/custom/scoreNum must be a number" in str(info.value)


@responses.activate
def test_simple_error_shape(kustomer):
    responses.get(
        f"{BASE}/conversations/nope",
        status=404,
        json={"errors": [{"code": "not_found", "message": "Conversation not found", "meta": {}}]},
    )
    with pytest.raises(NotFound, match="Conversation not found"):
        kustomer.fetch_ticket("nope")


@responses.activate
def test_missing_role_is_named(kustomer):
    responses.post(
        f"{BASE}/conversations/x1/notes",
        status=403,
        json={"errors": [{"status": 403, "title": "Forbidden", "detail": "Forbidden"}]},
    )
    with pytest.raises(MissingPermission) as info:
        kustomer.write_back("x1", "scoreNum", 9, "note", "sh:1", retry=False)
    assert "org.permission.note.create" in str(info.value)
    assert "org.user.note.write" in str(info.value)


@responses.activate
def test_wrong_pod_is_explained(kustomer):
    responses.get(
        f"{BASE}/auth/tokens/current",
        status=401,
        json={
            "errors": [
                {
                    "status": 401,
                    "title": "Unauthorized",
                    "detail": "Auth token associated with pod prod2 "
                    "but request is being handled by prod1",
                }
            ]
        },
    )
    with pytest.raises(BadCredentials) as info:
        kustomer.verify()
    assert "another Kustomer region" in str(info.value)
    assert "pod prod2" in str(info.value)


@responses.activate
def test_bad_key(kustomer):
    responses.get(
        f"{BASE}/auth/tokens/current",
        status=401,
        json={"errors": [{"status": 401, "title": "Unauthorized", "detail": "Expired token"}]},
    )
    with pytest.raises(BadCredentials, match="Expired token"):
        kustomer.verify()


@responses.activate
def test_verify_lists_missing_roles_and_warns_about_expiry(kustomer):
    roles = [
        "org.permission.note.read",
        "org.permission.search.create",
        "org.user.conversation.read",
        "org.permission.conversation.update",
        "org.permission.customer.read",
        "org.permission.note.create",
        "org.permission.metadata.read",
    ]
    responses.get(f"{BASE}/auth/tokens/current", json=token(roles, "2027-01-31T00:00:00.000Z"))
    check = kustomer.verify()
    assert check.missing_roles == (
        "org.permission.metadata.update (or org.admin.metadata.write)",
        "org.permission.user.read (or org.user.user.read)",
    )
    assert not check.ok
    assert check.key_name == "SurveyHub"
    assert check.account == "acme.kustomerapp.com"
    assert any("expires on 2027-01-31" in warning for warning in check.warnings)


@responses.activate
def test_broad_legacy_roles_are_enough(kustomer):
    responses.get(f"{BASE}/auth/tokens/current", json=token(["org.admin", "org.user"]))
    assert kustomer.verify().missing_roles == ()


@responses.activate
def test_write_back_is_two_requests_and_a_retry_checks_first(kustomer):
    responses.post(
        f"{BASE}/conversations/x1/notes",
        status=201,
        json={"data": {"type": "note", "id": "n1", "attributes": {"body": "NPS 9/10"}}},
    )
    responses.patch(f"{BASE}/conversations/x1", json={"data": conversation("x1")})
    result = kustomer.write_back("x1", "surveyhubNpsScoreNum", 9, "NPS 9/10", "sh:1", False)
    # The PATCH's updatedAt is what our writes left: the hub does not count it as activity.
    assert result == WriteResult("n1", parse_time("2026-10-20T10:00:00.000Z"))
    assert [c.request.method for c in responses.calls] == ["POST", "PATCH"]
    assert json.loads(responses.calls[0].request.body) == {"body": "NPS 9/10", "externalId": "sh:1"}
    assert json.loads(responses.calls[1].request.body) == {"custom": {"surveyhubNpsScoreNum": 9}}

    responses.calls.reset()
    responses.get(
        f"{BASE}/conversations/x1/notes?pageSize=100",
        json={
            "data": [
                {
                    "type": "note",
                    "id": "n1",
                    "attributes": {"body": "NPS 9/10", "externalId": "sh:1"},
                }
            ],
            "links": {"next": None},
        },
    )
    result = kustomer.write_back("x1", "surveyhubNpsScoreNum", 9, "NPS 9/10", "sh:1", True)
    assert result.note_id == "n1"
    assert [c.request.method for c in responses.calls] == ["GET", "PATCH"]


@responses.activate
def test_prepare_merges_metadata_and_keeps_other_attributes(kustomer):
    responses.get(
        f"{BASE}/metadata/conversation",
        json={
            "data": {
                "type": "metadata",
                "id": "conversation",
                # As Kustomer answers: read-only fields beside the documented ones.
                "attributes": {
                    "name": "conversation",
                    "updatedAt": "2026-10-01T00:00:00.000Z",
                    "properties": {"orderNumberStr": {"displayName": "Order number"}},
                    "standardProperties": {"priority": {"displayName": "Priority"}},
                    "validations": [],
                },
            }
        },
    )
    responses.put(f"{BASE}/metadata/conversation", json={"data": {}})
    kustomer.prepare("surveyhubNpsScoreNum", "NPS score")
    sent = json.loads(responses.calls[1].request.body)
    # Only the documented PUT keys go back: name and updatedAt would be refused.
    assert sent == {
        "properties": {
            "orderNumberStr": {"displayName": "Order number"},
            "surveyhubNpsScoreNum": {"displayName": "NPS score"},
        },
        "standardProperties": {"priority": {"displayName": "Priority"}},
    }


@responses.activate
def test_a_next_link_to_another_host_is_not_followed(kustomer):
    items = [conversation("x1", channel="chat")]
    page = search_page(items, 1, None)
    page["links"]["next"] = "https://evil.example/v1/customers/search?page=2"
    responses.get(f"{BASE}/users?pageSize=100", json={"data": [], "links": page["links"]})
    with pytest.raises(BadRequest, match="another host"):
        list(kustomer.agents())
    assert len(responses.calls) == 1


@responses.activate
def test_a_2xx_that_is_not_json_is_explained(kustomer):
    responses.get(f"{BASE}/auth/tokens/current", body="<html>captive portal</html>")
    with pytest.raises(Unavailable, match="not JSON"):
        kustomer.verify()


@responses.activate
def test_an_expiring_jwt_key_is_warned_about(clock):
    import base64

    def part(data):
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    key = f"{part({'alg': 'HS256'})}.{part({'exp': 1_900_000_000, 'orgName': 'acme'})}.sig"
    client = KustomerClient(BASE, key, sleep=clock.sleep, clock=clock)
    kustomer = Kustomer({"url": "acme"}, {"api_key": key}, client=client)
    responses.get(f"{BASE}/auth/tokens/current", json=token(["org.admin", "org.user"]))
    (warning,) = kustomer.verify().warnings
    assert "expires on 2030-03-17" in warning


def test_requester_address_is_the_first_valid_one_verified_first():
    def emails(*items):
        return [{"email": e, "type": "home", "verified": v} for e, v in items]

    assert requester_address(emails((" Jane.Doe@Example.COM ", True))) == "jane.doe@example.com"
    assert requester_address(emails(("nope", True), ("b@example.com", False))) == "b@example.com"
    assert requester_address(emails(("a@example.com", False), ("v@example.com", True))) == (
        "v@example.com"
    )
    # None valid: the first as given, so the pipeline can say "invalid email".
    assert requester_address(emails(("postmaster,c5@example.com", True))) == (
        "postmaster,c5@example.com"
    )
    assert requester_address([]) is None


@responses.activate
def test_an_outbound_conversation_is_started_by_an_agent_and_costs_no_customer_lookup(kustomer):
    outbound = conversation("x1")
    outbound["attributes"]["firstMessageIn"] = None
    outbound["attributes"]["direction"] = "out"
    replied = conversation("x2")  # the customer answered an agent's email
    replied["attributes"]["firstMessageIn"]["directionType"] = "response-in"
    native = conversation("x3", customer_id="c3")
    native["attributes"]["satisfactionLevel"] = {"status": "rated", "rating": 9}
    responses.post(
        f"{BASE}/customers/search?page=1&pageSize=100",
        json=search_page([outbound, replied, native], 1, None),
    )
    responses.get(f"{BASE}/customers/c3", json=customer("c3", ["c3@example.com"]))
    window = ScanWindow(utcnow() - timedelta(days=30), utcnow(), channels=("email",))
    tickets = {t.id: t for t in kustomer.scan(window)}
    assert tickets["x1"].started_by_agent and tickets["x1"].channel is None
    assert tickets["x2"].started_by_agent
    assert not tickets["x3"].started_by_agent and tickets["x3"].helpdesk_survey == "rated"
    assert tickets["x1"].requester_email is None
    assert [c.request.url for c in responses.calls if c.request.method == "GET"] == [
        f"{BASE}/customers/c3"
    ]


@responses.activate
def test_fetch_tickets_asks_for_many_conversations_in_one_request(kustomer):
    ids = [f"x{n}" for n in range(150)]
    responses.get(
        f"{BASE}/conversations/{','.join(ids[:100])}",
        json={"data": [conversation(i) for i in ids[:100]]},
    )
    responses.get(
        f"{BASE}/conversations/{','.join(ids[100:])}",
        json={"data": [conversation(i) for i in ids[100:]]},
    )
    found = kustomer.fetch_tickets(ids + ids[:3])  # repeats are asked once
    assert sorted(found) == sorted(ids)
    assert len(responses.calls) == 2
    assert all(t.requester_email is None for t in found.values())  # no customer GETs


@responses.activate
def test_fetch_tickets_finds_which_one_is_gone_when_the_batch_is_a_404(kustomer):
    responses.get(f"{BASE}/conversations/x1,x2", status=404, json=NOT_FOUND)
    responses.get(f"{BASE}/conversations/x1", json={"data": conversation("x1")})
    responses.get(f"{BASE}/conversations/x2", status=404, json=NOT_FOUND)
    assert list(kustomer.fetch_tickets(["x1", "x2"])) == ["x1"]


def test_an_unreachable_kustomer_is_named_in_words_at_once():
    port = free_port()  # nothing listens there
    kustomer = Kustomer(
        {"url": f"http://127.0.0.1:{port}"},
        {"api_key": "k"},
        HelpdeskContext(allowed_urls=(f"http://127.0.0.1:{port}",)),
    )
    with pytest.raises(Unavailable) as caught:
        kustomer.verify()
    assert str(caught.value) == (
        f"SurveyHub could not reach http://127.0.0.1:{port}: the connection was refused "
        "(nothing listens at that address)."
    )
    assert "urllib3" not in str(caught.value) and "Errno" not in str(caught.value)


def test_a_conversation_links_to_its_page_in_the_web_app(kustomer):
    ticket = Ticket(
        id="conv 1", status="done", channel="email", created_at=None, updated_at=None,
        resolved_at=None, requester_email=None, extra={"customer_id": "cust/9"},
    )  # fmt: skip
    assert kustomer.ticket_link(ticket) == (
        "https://acme.kustomerapp.com/app/customers/cust%2F9/event/conv%201"
    )
    assert kustomer.ticket_link(dataclasses.replace(ticket, extra={})) is None
    regional = Kustomer({"url": "https://api.prod2.kustomerapp.com"}, {"api_key": "k"})
    assert regional.ticket_link(ticket) is None  # no org name, no web address
