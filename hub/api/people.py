"""API: people, i.e. erasing everything the hub holds of one customer's address."""

from __future__ import annotations

from dataclasses import asdict

from flask import g
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import Schema
from marshmallow import fields

from hub.api.base import admin_only
from hub.api.base import api_blueprint
from hub.erasure import AddressOfHubUser
from hub.erasure import InvalidAddress
from hub.erasure import erase_person

people = api_blueprint("api_people", "/api/v1/people", "People")
BLUEPRINTS = (people,)


class ErasureSchema(Schema):
    """What an erasure removed; the address itself appears nowhere, not even here."""

    deliveries = fields.Integer(required=True, metadata={"description": "Deliveries removed."})
    ratings = fields.Integer(required=True, metadata={"description": "Ratings removed."})
    comments = fields.Integer(
        required=True, metadata={"description": "Of those ratings, the ones with a comment."}
    )
    write_backs = fields.Integer(required=True, metadata={"description": "Write-backs removed."})
    helpdesk_tickets = fields.Integer(
        required=True,
        metadata={
            "description": "Helpdesk tickets the hub wrote a note or attribute into; a job "
            "asks the helpdesk to remove them where its API allows."
        },
    )
    outbox_messages = fields.Integer(
        required=True, metadata={"description": "Copies in the development Outbox removed."}
    )
    already_suppressed = fields.Boolean(
        required=True,
        metadata={"description": "The address was on the suppression list before."},
    )
    audit_entry = fields.Integer(
        required=True, metadata={"description": "The audit entry recording this erasure."}
    )


@people.route("/<path:email>")
class Person(MethodView):
    @people.response(200, ErasureSchema)
    @people.alt_response(409, description="The address belongs to a SurveyHub user.")
    @people.alt_response(422, description="Not a valid email address.")
    def delete(self, email: str):
        """Erase a person: remove every delivery, rating and comment of the address (any
        case), keep it unsubscribed as a keyed hash, record an audit entry without the
        address, and queue a job that removes the hub's notes and attribute values from
        the helpdesk where its API allows. Idempotent: an address the hub holds nothing
        of is still put on the suppression list. Needs an admin's write token."""
        admin_only("erasing people")
        try:
            erasure = erase_person(email, g.api_user)
        except InvalidAddress as exc:
            abort(422, message=str(exc), errors={"email": [str(exc)]})
        except AddressOfHubUser as exc:
            abort(409, message=str(exc))
        return {**asdict(erasure.found), "audit_entry": erasure.audit_entry_id}
