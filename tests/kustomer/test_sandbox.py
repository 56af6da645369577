"""The connector against the Kustomer sandbox over real HTTP."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import requests

from hub.helpdesk import BadCredentials
from hub.helpdesk import MissingPermission
from hub.helpdesk import ScanWindow
from hub.helpdesk import Unavailable
from surveyhub_kustomer.connector import parse_time
from surveyhub_kustomer.sandbox.org import EXCLUDED_TAG
from surveyhub_kustomer.sandbox.org import ApiKey


def window(sandbox, channels=("email",), statuses=None) -> ScanWindow:
    now = sandbox.org.now
    return ScanWindow(
        resolved_after=now - timedelta(days=30),
        resolved_before=now - timedelta(hours=48),
        channels=channels,
        statuses=statuses,
    )


def test_scan_finds_exactly_the_conversations_due(sandbox):
    tickets = {t.id: t for t in sandbox.connector().scan(window(sandbox))}
    seeded = sandbox.seeded
    assert set(tickets) == set(seeded.eligible) | set(seeded.skipped)  # not the one not due
    for cid in seeded.eligible:
        assert tickets[cid].requester_email.endswith("@example.com")
        assert tickets[cid].channel == "email"
        assert tickets[cid].status == "done"
        assert tickets[cid].assignee_id is not None
    by_reason = {reason: tickets[cid] for cid, reason in seeded.skipped.items()}
    assert by_reason["wrong channel"].channel == "chat"
    assert by_reason["wrong channel"].requester_email is None  # not looked up
    assert by_reason["not resolved"].status == "open"
    assert by_reason["excluded tag"].tags == (EXCLUDED_TAG,)
    assert by_reason["no email"].requester_email is None
    assert by_reason["no human assignee"].assignee_id is None
    assert by_reason["cooldown"].requester_email == tickets[seeded.eligible[0]].requester_email
    assert tickets[seeded.eligible[1]].requester_locale == "de"


def test_scan_costs_pages_plus_one_request_per_customer(sandbox):
    due = window(sandbox, statuses=("done",))
    tickets = list(sandbox.connector().scan(due))
    counts = sandbox.state()["requests"]
    assert counts["POST /v1/customers/search"] == 1
    looked_up = {
        t.extra["customer_id"]
        for t in tickets
        if t.channel == "email" and t.status == "done" and not t.started_by_agent
    }
    assert counts["GET /v1/customers/<customer_id>"] == len(looked_up)


def test_scan_pages_past_the_100_page_limit(sandbox):
    org = sandbox.org
    customer = org.add_customer("Busy Person", ["busy@example.com"])
    for n in range(210):
        org.add_conversation(customer, updated_ago=timedelta(hours=60, seconds=n))
    sandbox.faults(search=1000)  # not this test's subject: Kustomer's 100 searches a minute
    kustomer = sandbox.connector()
    kustomer.page_size = 2  # 100 pages of 2 = 200 < 210 + the seeded ones
    tickets = list(kustomer.scan(window(sandbox)))
    ids = [t.id for t in tickets]
    seeded = len(sandbox.seeded.eligible) + len(sandbox.seeded.skipped)
    assert len(ids) == len(set(ids)) == 210 + seeded
    assert "GET /v1/customers/<customer_id>" in sandbox.state()["requests"]


def test_write_back_creates_one_note_and_sets_the_attribute(sandbox):
    conversation = sandbox.seeded.eligible[0]
    kustomer = sandbox.connector()
    before = sandbox.org.conversations[conversation]["attributes"]["updatedAt"]
    result = kustomer.write_back(
        conversation, "surveyhubNpsScoreNum", 9, "NPS 9/10 (promoter)", "sh:1", retry=False
    )
    state = sandbox.state()
    # Our writes bump updatedAt, as Kustomer's do; the connector reports the new one.
    after = sandbox.org.conversations[conversation]["attributes"]["updatedAt"]
    assert after > before and result.updated_at == parse_time(after)
    assert [n["body"] for n in state["notes"][conversation]] == ["NPS 9/10 (promoter)"]
    assert state["notes"][conversation][0]["externalId"] == "sh:1"
    assert state["custom"][conversation] == {"surveyhubNpsScoreNum": 9}
    assert result.note_id


def test_retry_after_a_502_that_was_applied_creates_no_second_note(sandbox):
    conversation = sandbox.seeded.eligible[0]
    kustomer = sandbox.connector()
    sandbox.faults(apply_then_fail=[502])
    with pytest.raises(Unavailable):
        kustomer.write_back(conversation, "surveyhubNpsScoreNum", 9, "NPS 9/10", "sh:7", False)
    kustomer.write_back(conversation, "surveyhubNpsScoreNum", 9, "NPS 9/10", "sh:7", retry=True)
    state = sandbox.state()
    assert len(state["notes"][conversation]) == 1
    assert state["custom"][conversation] == {"surveyhubNpsScoreNum": 9}


def test_prepare_keeps_existing_attributes(sandbox):
    kustomer = sandbox.connector()
    kustomer.prepare("surveyhubNpsScoreNum", "NPS score")
    kustomer.prepare("surveyhubNpsScoreNum", "NPS score")  # a second activation: no change
    document = sandbox.state()["metadata"]["conversation"]
    assert document["properties"] == {
        "orderNumberStr": {"displayName": "Order number", "type": "string"},
        "surveyhubNpsScoreNum": {"displayName": "NPS score"},
    }
    assert document["standardProperties"] == {"priority": {"displayName": "Priority"}}
    assert document["name"] == "conversation"


def test_the_sandbox_refuses_a_metadata_put_with_an_undocumented_key(sandbox):
    url = f"{sandbox.url}/v1/metadata/conversation"
    headers = {"Authorization": f"Bearer {sandbox.seeded.api_key}"}
    current = requests.get(url, headers=headers, timeout=5).json()["data"]["attributes"]
    assert {"name", "updatedAt", "properties"} <= set(current)
    refused = requests.put(url, json=current, headers=headers, timeout=5)  # read-only keys too
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["detail"] in {
        f"should NOT have additional property '{key}'" for key in ("createdAt", "name", "updatedAt")
    }
    named = {"name": "conversation", "properties": current["properties"]}
    refused = requests.put(url, json=named, headers=headers, timeout=5)
    assert refused.json()["errors"][0]["detail"] == "should NOT have additional property 'name'"
    fine = {"properties": current["properties"], "validations": []}
    assert requests.put(url, json=fine, headers=headers, timeout=5).status_code == 200


def test_verify_reports_the_key(sandbox):
    check = sandbox.connector().verify()
    assert check.ok and check.key_name == "SurveyHub sandbox key"


def test_wrong_key_and_wrong_pod_and_missing_role(sandbox):
    with pytest.raises(BadCredentials, match="refused the API key"):
        sandbox.connector(api_key="not-a-key").verify()
    sandbox.org.keys["eu-key"] = ApiKey("eu-key", "EU", pod="prod2")
    with pytest.raises(BadCredentials, match="another Kustomer region"):
        sandbox.connector(api_key="eu-key").verify()
    sandbox.org.keys["weak"] = ApiKey("weak", "Weak", roles=("org.permission.search.create",))
    missing = sandbox.connector(api_key="weak").verify().missing_roles
    assert any(role.startswith("org.permission.note.create") for role in missing)
    with pytest.raises(MissingPermission, match="org.permission.note.create"):
        sandbox.connector(api_key="weak").write_back(
            sandbox.seeded.eligible[0], "xNum", 1, "n", "sh:9", False
        )


def test_scan_survives_5xx_and_a_429_burst(sandbox):
    sandbox.faults(fail=[502, 503], burst_429=2, reset_in=1)
    kustomer = sandbox.connector(sleep=lambda seconds: time.sleep(min(seconds, 1.5)))
    tickets = list(kustomer.scan(window(sandbox)))
    assert len(tickets) == len(sandbox.seeded.eligible) + len(sandbox.seeded.skipped)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"queryContext": "conversation", "limit": 5}, "additional property 'limit'"),
        (
            {"queryContext": "conversation", "and": [{"conversation_status": {"is": "done"}}]},
            "unknown operator 'is'",
        ),
        (
            {
                "queryContext": "conversation",
                "and": [{"conversation_status": {"equals": "done"}}] * 21,
            },
            "more than 20 items",
        ),
        ({"and": []}, "required property 'queryContext'"),
    ],
)
def test_the_sandbox_refuses_a_search_body_the_docs_refuse(sandbox, body, detail):
    response = requests.post(
        f"{sandbox.url}/v1/customers/search",
        json=body,
        headers={"Authorization": f"Bearer {sandbox.seeded.api_key}"},
        timeout=5,
    )
    assert response.status_code == 400
    assert detail in response.json()["errors"][0]["detail"]
