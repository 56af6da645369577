"""The sandbox's HTTP API: the subset of Kustomer's REST API that SurveyHub uses.

Shapes follow KUSTOMER-API.md: JSON:API resources, relative `links`, the page-100 search
limit, rate-limit headers and 429s, both error formats. Control routes under
`/__sandbox/` inject faults (5xx, slow answers, 429 bursts) and show the org's state.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import threading
import time
from collections import Counter
from collections import deque
from datetime import UTC
from datetime import datetime
from typing import Any

import requests
from flask import Flask
from flask import g
from flask import jsonify
from flask import request

from surveyhub_kustomer.client import ROLES
from surveyhub_kustomer.sandbox.org import Org
from surveyhub_kustomer.sandbox.org import stamp

MAX_PAGE = 100
#: The keys `PUT /v1/metadata/{resource}` accepts (KUSTOMER-API.md §5).
METADATA_PUT_KEYS = {"properties", "standardProperties", "relationships", "validations"}
CUSTOM_NAME = re.compile(r"^[a-z][A-Za-z0-9]*(Str|Txt|Num|At|Bool|Url|Id)$")
SEARCHABLE = {
    "conversation_status": "status",
    "conversation_updated_at": "updatedAt",
    "conversation_created_at": "createdAt",
    "conversation_last_done_created_at": "lastDone.createdAt",
    "conversation_channels": "channels",
}


#: The search body's documented keys (`additionalProperties: false`) and operators.
SEARCH_KEYS = {"queryContext", "and", "or", "not", "sort", "timeZone", "includeDeleted"}
SEARCH_KEYS |= {"fields", "aggs", "searchHash"}
OPERATORS = {"equals", "in", "not_set", "gte", "gt", "lte", "lt", "contains"}


def search_body_problem(body: Any) -> str | None:
    """Why a search body breaks the documented schema, or None (KUSTOMER-API.md §2)."""
    if not isinstance(body, dict) or "queryContext" not in body:
        return "should have required property 'queryContext'"
    extra = [key for key in body if key not in SEARCH_KEYS]
    if extra:
        return f"should NOT have additional property '{extra[0]}'"
    for group in ("and", "or", "not"):
        criteria = body.get(group) or []
        criteria = criteria if isinstance(criteria, list) else [criteria]
        if len(criteria) > 20:
            return f"{group} should NOT have more than 20 items"
        for criterion in criteria:
            if not isinstance(criterion, dict):
                return f"{group} items should be objects"
            for condition in criterion.values():
                unknown = set(condition) - OPERATORS if isinstance(condition, dict) else {"?"}
                if unknown:
                    return f"unknown operator {sorted(unknown)[0]!r}"
    sort = body.get("sort") or []
    if isinstance(sort, list) and len(sort) > 5:
        return "sort should NOT have more than 5 items"
    return None


def jsonapi_error(status: int, title: str, detail: str = "", **extra: Any):
    """Kustomer's JSON:API error shape."""
    body = {
        "errors": [
            {
                "status": status,
                "code": title.lower().replace(" ", "_"),
                "title": title,
                "detail": detail or title,
                **extra,
            }
        ]
    }
    return jsonify(body), status


def simple_error(status: int, code: str, message: str):
    """Kustomer's other, simpler error shape."""
    return jsonify({"errors": [{"code": code, "message": message, "meta": {}}]}), status


class Faults:
    """What the next requests to /v1 should suffer."""

    def __init__(self) -> None:
        self.fail: deque[int] = deque()  # answer these statuses without applying
        self.apply_then_fail: deque[int] = deque()  # apply the request, then answer this
        self.burst_429 = 0
        self.reset_in: float | None = None  # seconds until x-ratelimit-reset in a burst
        self.slow = 0.0

    def update(self, settings: dict[str, Any]) -> None:
        self.fail.extend(settings.get("fail", ()))
        self.apply_then_fail.extend(settings.get("apply_then_fail", ()))
        self.burst_429 += int(settings.get("burst_429", 0))
        if "reset_in" in settings:
            self.reset_in = settings["reset_in"]
        self.slow = float(settings.get("slow", self.slow))

    def clear(self) -> None:
        self.__init__()


def _field(attributes: dict[str, Any], path: str) -> Any:
    value: Any = attributes
    for part in path.split("."):
        value = (value or {}).get(part) if isinstance(value, dict) else None
    return value


def _matches(value: Any, operator: str, expected: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    for item in values:
        if item is None:
            if operator == "not_set":
                return True
            continue
        if (
            (operator == "equals" and item == expected)
            or (operator == "in" and item in expected)
            or (operator == "gte" and item >= expected)
            or (operator == "gt" and item > expected)
            or (operator == "lte" and item <= expected)
            or (operator == "lt" and item < expected)
        ):
            return True
    return False


def create_sandbox(org: Org, rate_limit: int = 1000, search_limit: int = 100) -> Flask:
    """The sandbox app for `org`, counting requests per minute against the given limits."""
    app = Flask("surveyhub_kustomer.sandbox")
    faults = Faults()
    counts: Counter[str] = Counter()
    windows: Counter[tuple[str, int]] = Counter()
    limits = {"all": rate_limit, "search": search_limit}
    app.extensions["sandbox"] = {"org": org, "faults": faults, "counts": counts, "limits": limits}

    def resource_conversation(conversation_id: str) -> dict[str, Any]:
        conversation = org.conversations[conversation_id]
        customer_id = conversation["customer_id"]
        return {
            "type": "conversation",
            "id": conversation_id,
            "attributes": conversation["attributes"],
            "relationships": {
                "customer": {
                    "data": {"type": "customer", "id": customer_id},
                    "links": {"self": f"/v1/customers/{customer_id}"},
                },
            },
            "links": {"self": f"/v1/conversations/{conversation_id}"},
        }

    def touch(conversation_id: str) -> None:
        org.conversations[conversation_id]["attributes"]["updatedAt"] = stamp(datetime.now(UTC))

    def require(need: str):
        key = org.keys.get(g.token)
        if not set(ROLES[need]) & set(key.roles):
            return jsonapi_error(403, "Forbidden", f"Missing required role(s): {ROLES[need][0]}")
        return None

    @app.before_request
    def gatekeeper():
        if request.path.startswith("/__sandbox/"):
            return None
        counts[
            f"{request.method} {request.url_rule.rule if request.url_rule else request.path}"
        ] += 1
        if faults.slow:
            time.sleep(faults.slow)
        header = request.headers.get("Authorization", "")
        g.token = header.removeprefix("Bearer ").strip()
        key = org.keys.get(g.token)
        if key is None:
            return jsonapi_error(401, "Unauthorized", "Invalid or expired token")
        if key.pod != "prod1":
            return jsonapi_error(
                401,
                "Unauthorized",
                f"Auth token associated with pod {key.pod} but request is being handled by prod1",
            )
        window = int(time.time() // 60)
        reset = str((window + 1) * 60)
        is_search = request.path.endswith("/search")
        windows[("all", window)] += 1
        if is_search:
            windows[("search", window)] += 1
        rate_limit = limits["all"]
        over = windows[("all", window)] > rate_limit or (
            is_search and windows[("search", window)] > limits["search"]
        )
        if faults.burst_429 > 0 or over:
            if faults.burst_429 > 0 and faults.reset_in is not None:
                reset = str(int(time.time() + faults.reset_in))
            faults.burst_429 = max(0, faults.burst_429 - 1)
            response, status = simple_error(429, "too_many_requests", "Rate limit exceeded")
            response.headers.update(
                {
                    "x-ratelimit-limit": str(rate_limit),
                    "x-ratelimit-remaining": "0",
                    "x-ratelimit-reset": reset,
                }
            )
            return response, status
        g.rate_headers = {
            "x-ratelimit-limit": str(rate_limit),
            "x-ratelimit-remaining": str(max(0, rate_limit - windows[("all", window)])),
        }
        if faults.fail:
            status = faults.fail.popleft()
            return simple_error(status, "server_error", f"Injected failure {status}")
        return None

    @app.after_request
    def headers(response):
        for name, value in (g.get("rate_headers") or {}).items():
            response.headers.setdefault(name, value)
        if (
            not request.path.startswith("/__sandbox/")
            and faults.apply_then_fail
            and (response.status_code < 400)
        ):
            status = faults.apply_then_fail.popleft()
            failed, _ = simple_error(status, "bad_gateway", "Upstream connection reset")
            failed.status_code = status
            return failed
        return response

    @app.get("/v1/auth/tokens/current")
    def token_current():
        key = org.keys[g.token]
        attributes = {
            "name": key.name,
            "lastTokenChars": g.token[-4:],
            "roles": list(key.roles),
            "createdAt": stamp(org.now),
            "lastAccessedAt": stamp(datetime.now(UTC)),
        }
        if key.expires_at:
            attributes["expiresAt"] = key.expires_at
        return jsonify(
            {
                "data": {
                    "type": "token",
                    "id": "tok",
                    "attributes": attributes,
                    "relationships": {"org": {"data": {"type": "org", "id": org.name}}},
                }
            }
        )

    @app.get("/v1/users")
    def users():
        if denied := require("user.read"):
            return denied
        items = [
            {"type": "user", "id": uid, "attributes": attrs} for uid, attrs in org.users.items()
        ]
        return jsonify(paged(items, "/v1/users"))

    def paged(items: list[dict[str, Any]], path: str) -> dict[str, Any]:
        page = int(request.args.get("page", 1))
        size = min(int(request.args.get("pageSize", 100)), 500)
        chunk = items[(page - 1) * size : page * size]
        has_next = page * size < len(items)
        return {
            "meta": {"pageSize": size, "page": page},
            "data": chunk,
            "links": {
                "self": f"{path}?page={page}&pageSize={size}",
                "first": f"{path}?page=1&pageSize={size}",
                "prev": f"{path}?page={page - 1}&pageSize={size}" if page > 1 else None,
                "next": f"{path}?page={page + 1}&pageSize={size}" if has_next else None,
            },
        }

    @app.post("/v1/customers/search")
    def search():
        if denied := require("search"):
            return denied
        body = request.get_json(silent=True) or {}
        if problem := search_body_problem(body):
            return jsonapi_error(400, "Bad Request", problem, source={"pointer": "/"})
        if body.get("queryContext") != "conversation":
            return simple_error(400, "bad_request", "The sandbox searches conversations only")
        page = int(request.args.get("page", 1))
        size = min(int(request.args.get("pageSize", 100)), 500)
        if page > MAX_PAGE:
            return jsonapi_error(
                400,
                "Bad Request",
                "Search results are limited to 100 pages",
                source={"parameter": "page"},
            )
        criteria = body.get("and") or []
        criteria = criteria if isinstance(criteria, list) else [criteria]
        with org.lock:
            found = []
            for conversation_id, conversation in org.conversations.items():
                attributes = conversation["attributes"]
                ok = True
                for criterion in criteria:
                    for attribute, condition in criterion.items():
                        if attribute not in SEARCHABLE:
                            return simple_error(
                                400, "bad_request", f"Unknown attribute {attribute}"
                            )
                        for operator, expected in condition.items():
                            if not _matches(
                                _field(attributes, SEARCHABLE[attribute]), operator, expected
                            ):
                                ok = False
                if ok:
                    found.append(conversation_id)
            sort = body.get("sort") or [{}]
            sort = sort[0] if isinstance(sort, list) else sort
            reverse = sort.get("conversation_updated_at") == "desc"
            found.sort(
                key=lambda cid: (org.conversations[cid]["attributes"]["updatedAt"], cid),
                reverse=reverse,
            )
            total = len(found)
            chunk = [resource_conversation(cid) for cid in found[(page - 1) * size : page * size]]
        pages = max(1, -(-total // size))
        base = "/v1/customers/search"
        return jsonify(
            {
                "meta": {"pageSize": size, "page": page, "total": total, "totalPages": pages},
                "data": chunk,
                "links": {
                    "self": f"{base}?page={page}&pageSize={size}",
                    "first": f"{base}?page=1&pageSize={size}",
                    "prev": f"{base}?page={page - 1}&pageSize={size}" if page > 1 else None,
                    "next": f"{base}?page={page + 1}&pageSize={size}" if page < pages else None,
                    "last": f"{base}?page={pages}&pageSize={size}",
                },
            }
        )

    @app.get("/v1/conversations/<ids>")
    def get_conversation(ids: str):
        if denied := require("conversation.read"):
            return denied
        wanted = ids.split(",")
        missing = [i for i in wanted if i not in org.conversations]
        if missing:
            return jsonapi_error(404, "Not Found", f"Conversation {missing[0]} not found")
        items = [resource_conversation(i) for i in wanted]
        return jsonify({"data": items if len(items) > 1 else items[0]})

    @app.patch("/v1/conversations/<conversation_id>")
    def patch_conversation(conversation_id: str):
        if denied := require("conversation.update"):
            return denied
        if conversation_id not in org.conversations:
            return jsonapi_error(404, "Not Found", f"Conversation {conversation_id} not found")
        body = request.get_json(silent=True) or {}
        custom = body.get("custom") or {}
        if not isinstance(custom, dict) or len(custom) > 100:
            return jsonapi_error(400, "Bad Request", "custom must be an object of at most 100")
        for name, value in custom.items():
            bad = not CUSTOM_NAME.match(name) or (
                name.endswith("Num") and value is not None and not isinstance(value, int | float)
            )
            if bad:
                return jsonapi_error(
                    400,
                    "Bad Request",
                    "Validation failed",
                    meta={
                        "subErrors": [
                            {
                                "title": "invalid custom attribute",
                                "source": {"pointer": f"/custom/{name}"},
                            }
                        ]
                    },
                )
        with org.lock:
            attributes = org.conversations[conversation_id]["attributes"]
            before = dict(attributes["custom"])
            attributes["custom"].update(custom)
            for name in [name for name, value in custom.items() if value is None]:
                del attributes["custom"][name]  # null clears the value (KUSTOMER-API.md §5)
            touch(conversation_id)
            payload = resource_conversation(conversation_id)
        deliver(
            "kustomer.conversation.update",
            payload,
            {
                "attributes": {
                    "custom": {"op": "replace", "before": before, "after": attributes["custom"]}
                }
            },
            custom_changed=True,
        )
        return jsonify({"data": payload})

    @app.get("/v1/customers/<customer_id>")
    def get_customer(customer_id: str):
        if denied := require("customer.read"):
            return denied
        if customer_id not in org.customers:
            return jsonapi_error(404, "Not Found", f"Customer {customer_id} not found")
        return jsonify(
            {
                "data": {
                    "type": "customer",
                    "id": customer_id,
                    "attributes": org.customers[customer_id],
                }
            }
        )

    @app.post("/v1/conversations/<conversation_id>/notes")
    def create_note(conversation_id: str):
        if denied := require("note.create"):
            return denied
        if conversation_id not in org.conversations:
            return jsonapi_error(404, "Not Found", f"Conversation {conversation_id} not found")
        body = request.get_json(silent=True) or {}
        allowed = {"body", "userMentions", "externalId", "attachments", "lang"}
        if set(body) - allowed or not 1 <= len(body.get("body") or "") <= 10240:
            return jsonapi_error(400, "Bad Request", "Invalid note", source={"pointer": "/body"})
        if len(body.get("externalId") or "") > 256:
            return jsonapi_error(
                400, "Bad Request", "externalId too long", source={"pointer": "/externalId"}
            )
        with org.lock:
            note = {
                "type": "note",
                "id": org.new_id(),
                "attributes": {
                    "body": body["body"],
                    "externalId": body.get("externalId"),
                    "createdAt": stamp(datetime.now(UTC)),
                },
                "relationships": {
                    "conversation": {"data": {"type": "conversation", "id": conversation_id}}
                },
            }
            org.notes[conversation_id].append(note)
            attributes = org.conversations[conversation_id]["attributes"]
            attributes["noteCount"] += 1
            touch(conversation_id)
            payload = resource_conversation(conversation_id)
        # Kustomer reports a note as an update of its conversation, ours included.
        deliver(
            "kustomer.conversation.update",
            payload,
            {
                "attributes": {
                    "noteCount": {
                        "op": "replace",
                        "before": attributes["noteCount"] - 1,
                        "after": attributes["noteCount"],
                    }
                }
            },
        )
        return jsonify({"data": note}), 201

    @app.get("/v1/conversations/<conversation_id>/notes")
    def list_notes(conversation_id: str):
        if denied := require("note.read"):
            return denied
        if conversation_id not in org.conversations:
            return jsonapi_error(404, "Not Found", f"Conversation {conversation_id} not found")
        return jsonify(
            paged(list(org.notes[conversation_id]), f"/v1/conversations/{conversation_id}/notes")
        )

    @app.get("/v1/metadata/<resource>")
    def get_metadata(resource: str):
        if denied := require("metadata.read"):
            return denied
        with org.lock:
            document = dict(org.metadata.get(resource) or {"name": resource, "properties": {}})
        return jsonify({"data": {"type": "metadata", "id": resource, "attributes": document}})

    @app.put("/v1/metadata/<resource>")
    def put_metadata(resource: str):
        if denied := require("metadata.update"):
            return denied
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return jsonapi_error(400, "Bad Request", "The body must be a JSON object")
        # The documented body, and nothing else (as Kustomer's schema validator answers).
        extra = [key for key in body if key not in METADATA_PUT_KEYS]
        if extra:
            return jsonapi_error(
                400,
                "Bad Request",
                f"should NOT have additional property '{extra[0]}'",
                source={"pointer": f"/{extra[0]}"},
            )
        properties = body.get("properties")
        if not isinstance(properties, dict):
            return simple_error(400, "bad_request", "properties must be an object")
        bad = [name for name in properties if not CUSTOM_NAME.match(name)]
        if bad:
            return jsonapi_error(
                400,
                "Bad Request",
                f"Invalid attribute name {bad[0]}",
                source={"pointer": f"/properties/{bad[0]}"},
            )
        with org.lock:
            old = org.metadata.get(resource) or {}
            # A PUT replaces the document (the safe reading of the docs): what the caller
            # leaves out is gone. Only the read-only fields stay the server's.
            document = {
                "name": resource,
                "createdAt": old.get("createdAt") or stamp(datetime.now(UTC)),
                **body,
                "updatedAt": stamp(datetime.now(UTC)),
            }
            org.metadata[resource] = document
        return jsonify({"data": {"type": "metadata", "id": resource, "attributes": document}})

    @app.post("/v1/outbound-webhooks")
    def create_webhook():
        body = request.get_json(silent=True) or {}
        url = body.get("url") or ""
        local = url.startswith(("http://127.0.0.1", "http://localhost"))
        if not (url.startswith("https://") or local):
            return jsonapi_error(
                400, "Bad Request", "url must be https", source={"pointer": "/url"}
            )
        events = body.get("events") or []
        if not events or len(events) > 12:
            return jsonapi_error(
                400, "Bad Request", "1 to 12 events", source={"pointer": "/events"}
            )
        if len(org.webhooks) >= 5:
            return simple_error(400, "limit_reached", "At most 5 outbound webhooks")
        webhook_id = org.new_id()
        hook = {
            "name": body.get("name"),
            "url": url,
            "events": events,
            "headers": body.get("headers") or [],
            "token": hashlib.sha256(webhook_id.encode()).hexdigest()[:40],
            "enabled": True,
        }
        org.webhooks[webhook_id] = hook
        return jsonify(
            {"data": {"type": "outbound_webhook", "id": webhook_id, "attributes": hook}}
        ), 201

    @app.get("/v1/outbound-webhooks")
    def list_webhooks():
        items = [
            {"type": "outbound_webhook", "id": wid, "attributes": hook}
            for wid, hook in org.webhooks.items()
        ]
        return jsonify(paged(items, "/v1/outbound-webhooks"))

    @app.delete("/v1/outbound-webhooks/<webhook_id>")
    def delete_webhook(webhook_id: str):
        if org.webhooks.pop(webhook_id, None) is None:
            return jsonapi_error(404, "Not Found", "No such webhook")
        return "", 204

    def deliver(
        event: str,
        payload: dict[str, Any],
        changes: dict[str, Any] | None,
        custom_changed: bool = False,
    ) -> None:
        envelope = {
            "id": f"evt-{time.time_ns()}",
            "name": event,
            "org": org.name,
            "orgName": org.name,
            "createdAt": stamp(datetime.now(UTC)),
            "dataId": payload["id"],
            "data": payload,
            "changes": changes,
            "meta": {"customChanged": custom_changed},
        }
        raw = json.dumps(envelope).encode()
        for hook in list(org.webhooks.values()):
            if event not in hook["events"] or not hook["enabled"]:
                continue
            signature = hmac.new(hook["token"].encode(), raw, hashlib.sha256).hexdigest()
            headers = {
                "Content-Type": "application/json",
                "X-Kustomer-Webhook-Event": event,
                "X-Kustomer-Webhook-Signature": signature,
            }
            headers.update({h["name"]: h["value"] for h in hook["headers"]})
            threading.Thread(target=_post, args=(hook["url"], raw, headers), daemon=True).start()

    # -- control routes -------------------------------------------------------------

    @app.get("/__sandbox/state")
    def state():
        with org.lock:
            return jsonify(
                {
                    "notes": {
                        cid: [n["attributes"] for n in notes]
                        for cid, notes in org.notes.items()
                        if notes
                    },
                    "custom": {
                        cid: c["attributes"]["custom"]
                        for cid, c in org.conversations.items()
                        if c["attributes"]["custom"]
                    },
                    "metadata": org.metadata,
                    "webhooks": [{"id": wid, **hook} for wid, hook in org.webhooks.items()],
                    "requests": dict(counts),
                }
            )

    @app.post("/__sandbox/faults")
    def set_faults():
        body = request.get_json(silent=True) or {}
        if body.get("clear"):
            faults.clear()
        faults.update(body)
        limits.update({k: int(body[k]) for k in ("all", "search") if k in body})
        return jsonify(
            {
                "fail": list(faults.fail),
                "apply_then_fail": list(faults.apply_then_fail),
                "burst_429": faults.burst_429,
                "slow": faults.slow,
            }
        )

    @app.post("/__sandbox/reset-counts")
    def reset_counts():
        counts.clear()
        return jsonify({})

    @app.post("/__sandbox/conversations/<conversation_id>/resolve")
    def resolve(conversation_id: str):
        with org.lock:
            attributes = org.conversations[conversation_id]["attributes"]
            before = attributes["status"]
            now = stamp(datetime.now(UTC))
            attributes["status"] = "done"
            attributes["lastDone"] = dict(attributes.get("lastDone") or {}, createdAt=now)
            attributes["doneCount"] += 1
            attributes["updatedAt"] = now
            payload = resource_conversation(conversation_id)
        deliver(
            "kustomer.conversation.update",
            payload,
            {"attributes": {"status": {"op": "replace", "before": before, "after": "done"}}},
        )
        return jsonify({"data": payload})

    return app


def _post(url: str, raw: bytes, headers: dict[str, str]) -> None:
    # One delivery attempt; the hub's polling is the backstop, as with the real Kustomer.
    with contextlib.suppress(requests.RequestException):
        requests.post(url, data=raw, headers=headers, timeout=5)
