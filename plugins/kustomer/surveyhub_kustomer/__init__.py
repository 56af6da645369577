"""The Kustomer helpdesk plugin: installing it makes Kustomer appear in the app directory."""

from marshmallow import Schema
from marshmallow import fields

from hub import hookimpl
from hub.contracts import Helpdesk


class KustomerSettings(Schema):
    """The connect form: the Kustomer URL and an API key that never expires."""

    url = fields.String(
        required=True,
        metadata={"label": "Kustomer URL", "placeholder": "https://acme.kustomerapp.com"},
    )
    api_key = fields.String(required=True, metadata={"label": "API key", "secret": True})


class Kustomer(Helpdesk):
    """Kustomer (kustomer.com), through its REST API."""

    key = "kustomer"
    title = "Kustomer"
    settings_schema = KustomerSettings


@hookimpl
def register_helpdesks():
    return [Kustomer]
