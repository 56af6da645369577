"""Payloads shaped like Kustomer's API (see ../shared/KUSTOMER-API.md), for `responses`."""

from __future__ import annotations

from typing import Any

BASE = "https://acme.api.kustomerapp.com/v1"
AGENT = "5f00000000000000000000a1"


def conversation(
    conversation_id: str,
    updated_at: str = "2026-10-20T10:00:00.000Z",
    customer_id: str = "c1",
    channel: str = "email",
    status: str = "done",
) -> dict[str, Any]:
    return {
        "type": "conversation",
        "id": conversation_id,
        "attributes": {
            "name": "Order missing",
            "status": status,
            "channels": [channel],
            "createdAt": "2026-10-18T18:50:55.976Z",
            "updatedAt": updated_at,
            "firstMessageIn": {"id": "m1", "channel": channel, "directionType": "initial-in"},
            "lastDone": {
                "createdAt": updated_at,
                "createdBy": AGENT,
                "assignedUsers": [AGENT],
                "assignedTeams": [],
            },
            "assignedUsers": [AGENT],
            "tags": [],
            "custom": {},
        },
        "relationships": {
            "customer": {
                "data": {"type": "customer", "id": customer_id},
                "links": {"self": f"/v1/customers/{customer_id}"},
            }
        },
        "links": {"self": f"/v1/conversations/{conversation_id}"},
    }


def customer(customer_id: str, emails: list[str], locale: str | None = None) -> dict[str, Any]:
    return {
        "data": {
            "type": "customer",
            "id": customer_id,
            "attributes": {
                "name": f"Customer {customer_id}",
                "displayName": f"Customer {customer_id}",
                "emails": [
                    {"email": e, "type": "home", "verified": True, "id": None} for e in emails
                ],
                "locale": locale,
            },
        }
    }


def search_page(items: list[dict[str, Any]], page: int, next_page: int | None) -> dict[str, Any]:
    link = "/v1/customers/search?page={}&pageSize=100"
    return {
        "meta": {"pageSize": 100, "page": page, "total": 10000, "totalPages": 100},
        "data": items,
        "links": {
            "self": link.format(page),
            "first": link.format(1),
            "prev": link.format(page - 1) if page > 1 else None,
            "next": link.format(next_page) if next_page else None,
            "last": link.format(100),
        },
    }


def token(roles: list[str], expires_at: str | None = None) -> dict[str, Any]:
    attributes = {
        "name": "SurveyHub",
        "lastTokenChars": "a1b2",
        "roles": roles,
        "createdAt": "2026-01-01T00:00:00.000Z",
        "lastAccessedAt": "2026-11-20T00:00:00.000Z",
    }
    if expires_at:
        attributes["expiresAt"] = expires_at
    return {
        "data": {
            "type": "token",
            "id": "t1",
            "attributes": attributes,
            "relationships": {"org": {"data": {"type": "org", "id": "o1"}}},
        }
    }
