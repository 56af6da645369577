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


def resolution(envelope: dict[str, Any]) -> TicketEvent | None:
    """The resolution this event reports, or None (other changes, our own writes)."""
    if envelope.get("name") != "kustomer.conversation.update":
        return None
    data = envelope.get("data") or {}
    attributes = data.get("attributes") or {}
    changed = ((envelope.get("changes") or {}).get("attributes")) or {}
    status_change = changed.get("status") or {}
    if status_change.get("after") != "done" or attributes.get("status") != "done":
        # Includes our own custom-attribute PATCHes (meta.customChanged, no status change).
        return None
    return TicketEvent(
        event_id=str(envelope.get("id") or ""),
        ticket_id=str(data.get("id") or envelope.get("dataId") or ""),
        resolved_at=parse_time((attributes.get("lastDone") or {}).get("createdAt")),
    )


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
    raw = request.get_data(cache=False)
    if header is None or not signature_valid(token, raw, request.headers[header]):
        log.warning("Kustomer webhook for connection %s: bad or missing signature", connection_id)
        return jsonify(error="invalid signature"), 401
    if header != SIGNATURE_HEADERS[0]:
        log.info("Kustomer webhook signed with header %s", header)
    try:
        envelope = json.loads(raw)
    except ValueError:
        return jsonify(error="the body is not JSON"), 400
    if not isinstance(envelope, dict):
        return jsonify(error="the body is not a Kustomer event"), 400
    event = resolution(envelope)
    if event is None:
        return jsonify(status="ignored")
    if not _first_time(connection_id, event.event_id):
        return jsonify(status="duplicate")
    current_app.extensions["hub"].registry.ticket_resolved(connection, event)
    return jsonify(status="accepted")
