"""Receiving Kustomer's outbound webhooks: verify, de-duplicate, filter, report resolutions."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

from flask import Blueprint
from flask import current_app
from flask import jsonify
from flask import request
from marshmallow import INCLUDE
from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from redis.exceptions import RedisError

from hub.extensions import csrf
from hub.extensions import db
from hub.helpdesk import TicketEvent
from hub.jobs import redis_connection
from hub.models import Connection
from surveyhub_kustomer.connector import parse_time

log = logging.getLogger(__name__)

bp = Blueprint("kustomer_webhooks", __name__)
csrf.exempt(bp)  # Kustomer signs its requests instead

#: Header names seen for the signature (the documented one first); looked up
#: case-insensitively.
SIGNATURE_HEADERS = ("X-Kustomer-Webhook-Signature", "X-Kustomer-Signature")
#: Kustomer retries for about an hour; remember event ids a little longer.
DEDUPE_SECONDS = 2 * 3600


def signature_valid(token: str, raw_body: bytes, signature: str) -> bool:
    """Whether `signature` is the hex HMAC-SHA256 of the raw body under the webhook token."""
    expected = hmac.new(token.encode(), raw_body, hashlib.sha256).hexdigest().encode()
    # Bytes: a header with non-ASCII characters is simply a wrong signature.
    return hmac.compare_digest(expected, signature.strip().lower().encode("utf-8", "replace"))


class _Change(Schema):
    class Meta:
        unknown = INCLUDE

    after = fields.Raw(load_default=None)


class _ChangedAttributes(Schema):
    class Meta:
        unknown = INCLUDE

    status = fields.Nested(_Change, load_default=None, allow_none=True)


class _Changes(Schema):
    class Meta:
        unknown = INCLUDE

    attributes = fields.Nested(_ChangedAttributes, load_default=None, allow_none=True)


class _LastDone(Schema):
    class Meta:
        unknown = INCLUDE

    createdAt = fields.String(load_default=None, allow_none=True)  # noqa: N815 (Kustomer's)


class _Attributes(Schema):
    class Meta:
        unknown = INCLUDE

    status = fields.String(load_default=None, allow_none=True)
    lastDone = fields.Nested(_LastDone, load_default=None, allow_none=True)  # noqa: N815


class _Data(Schema):
    class Meta:
        unknown = INCLUDE

    id = fields.String(load_default=None, allow_none=True)
    attributes = fields.Nested(_Attributes, load_default=None, allow_none=True)


class EventSchema(Schema):
    """The parts of a Kustomer event envelope the hub reads, with their types checked
    (a validly signed body is still only trusted as far as its shape)."""

    class Meta:
        unknown = INCLUDE

    id = fields.Raw(load_default="")
    name = fields.String(required=True)
    dataId = fields.String(load_default=None, allow_none=True)  # noqa: N815
    data = fields.Nested(_Data, load_default=None, allow_none=True)
    changes = fields.Nested(_Changes, load_default=None, allow_none=True)


def resolution(envelope: dict[str, Any]) -> TicketEvent | None:
    """The resolution this event reports, or None (other changes, our own writes).

    Raises `ValidationError` for a body that is not shaped like a Kustomer event.
    """
    event = EventSchema().load(envelope)
    if event["name"] != "kustomer.conversation.update":
        return None
    data = event["data"] or {}
    attributes = data.get("attributes") or {}
    changed = (event["changes"] or {}).get("attributes") or {}
    status_change = changed.get("status") or {}
    if status_change.get("after") != "done" or attributes.get("status") != "done":
        # Includes our own notes and custom-attribute PATCHes (no status change).
        return None
    ticket_id = data.get("id") or event["dataId"]
    if not ticket_id or not isinstance(event["id"], str | int):
        raise ValidationError("The event names no conversation.")
    try:
        resolved_at = parse_time((attributes.get("lastDone") or {}).get("createdAt"))
    except ValueError as exc:
        raise ValidationError(f"lastDone.createdAt is not a time: {exc}") from exc
    return TicketEvent(event_id=str(event["id"]), ticket_id=str(ticket_id), resolved_at=resolved_at)


def _first_time(connection_id: int, event_id: str) -> bool:
    if not event_id:
        return True
    try:
        key = f"surveyhub:kustomer:webhook:{connection_id}:{event_id}"
        return bool(redis_connection().set(key, 1, nx=True, ex=DEDUPE_SECONDS))
    except RedisError:
        # Without Redis, handle it: acting on a resolution twice is harmless downstream.
        return True


@bp.post("/hooks/kustomer/<int(max=2147483647):connection_id>")
def receive(connection_id: int):
    """Kustomer's outbound webhook for one connection."""
    connection = db.session.get(Connection, connection_id)
    if connection is None or connection.helpdesk != "kustomer":
        return jsonify(error="unknown connection"), 404
    token = connection.get_secrets().get("webhook_token")
    if not token:
        return jsonify(error="this connection has no webhook"), 404
    header = next((h for h in SIGNATURE_HEADERS if request.headers.get(h)), None)
    try:
        raw = request.get_data(cache=False)
    except OSError:  # a broken chunked body, as the server read it
        return jsonify(error="the body could not be read"), 400
    if header is None or not signature_valid(token, raw, request.headers[header]):
        log.warning("Kustomer webhook for connection %s: bad or missing signature", connection_id)
        return jsonify(error="invalid signature"), 401
    if header != SIGNATURE_HEADERS[0]:
        log.info("Kustomer webhook signed with header %s", header)
    try:
        envelope = json.loads(raw)
    except (ValueError, RecursionError):
        return jsonify(error="the body is not JSON"), 400
    if not isinstance(envelope, dict):
        return jsonify(error="the body is not a Kustomer event"), 400
    try:
        event = resolution(envelope)
    except ValidationError as exc:
        return jsonify(error="the body is not a Kustomer event", details=exc.messages), 400
    if event is None:
        return jsonify(status="ignored")
    if not _first_time(connection_id, event.event_id):
        return jsonify(status="duplicate")
    current_app.extensions["hub"].registry.ticket_resolved(connection, event)
    return jsonify(status="accepted")
