"""The API's marshmallow schemas: query arguments and the resources it returns (the
OpenAPI document is generated from these)."""

from __future__ import annotations

from marshmallow import RAISE
from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import validate
from marshmallow import validates_schema

from hub.models import DeliveryState
from hub.pipeline.decide import REASONS
from hub.surveys import SurveySettingsSchema

MAX_ID = 2**31 - 1
ID = validate.Range(min=1, max=MAX_ID)
#: A name on one line (no control characters).
ONE_LINE = validate.Regexp(r"^[^\x00-\x1f\x7f]*$", error="Use a single line of text.")
#: Ids and keys as helpdesks give them: printable ASCII.
PRINTABLE = validate.Regexp(r"^[\x20-\x7e]+$", error="Use printable ASCII characters.")


class ProblemSchema(Schema):
    """An error (RFC 9457 problem details)."""

    type = fields.String(metadata={"description": "about:blank"})
    status = fields.Integer()
    title = fields.String()
    detail = fields.String()
    errors = fields.Dict(
        keys=fields.String(),
        metadata={"description": "Invalid input: the messages per field."},
    )


class SurveySchema(Schema):
    id = fields.Integer(dump_only=True)
    name = fields.String()
    metric = fields.String()
    scale = fields.Integer(metadata={"description": "Number of answer points (NPS: 11)."})
    active = fields.Boolean()
    connection_id = fields.Integer()
    activated_at = fields.DateTime(allow_none=True)
    last_scan_at = fields.DateTime(allow_none=True)
    last_scan_error = fields.String()
    settings = fields.Dict(
        keys=fields.String(),
        metadata={"description": "The trigger and email settings, defaults filled in."},
    )


class StrictBoolean(fields.Boolean):
    """JSON's true or false only (marshmallow's Boolean also takes 0, 1, "yes"…)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class SettingsInputSchema(SurveySettingsSchema):
    """Trigger and email settings as the API takes them: unknown keys are refused, and a
    boolean is JSON's true or false (not 0, 1 or "yes", which forms send)."""

    class Meta:
        unknown = RAISE

    def on_bind_field(self, field_name, field_obj):
        if type(field_obj) is fields.Boolean:  # this schema's own copy of the field
            field_obj.__class__ = StrictBoolean
        elif isinstance(field_obj, fields.Integer):
            field_obj.strict = True  # 2.5 is not a number of days


class SettingsPatchSchema(SettingsInputSchema):
    """Some of the settings: those given change."""


class SurveyCreateSchema(Schema):
    name = fields.String(required=True, validate=[validate.Length(min=1, max=200), ONE_LINE])
    metric = fields.String(
        required=True,
        validate=validate.Length(min=1, max=50),
        metadata={"description": "An installed metric's key: nps, csat, ces…"},
    )
    scale = fields.Integer(
        strict=True,
        validate=validate.Range(min=2, max=11),
        metadata={"description": "One of the metric's scales; its default without."},
    )
    connection_id = fields.Integer(strict=True, required=True, validate=ID)
    settings = fields.Nested(SettingsInputSchema, metadata={"description": "Over the defaults."})


class SurveyUpdateSchema(Schema):
    """A new name, some settings, or both (at least one)."""

    name = fields.String(validate=[validate.Length(min=1, max=200), ONE_LINE])
    settings = fields.Nested(
        SettingsPatchSchema(partial=True),
        metadata={"description": "Only the settings given change; the trigger stays as it is."},
    )

    @validates_schema
    def _something(self, data, **kwargs):
        if not data:
            raise ValidationError("Give a name, settings or both.", "_schema")


class DryRunInputSchema(Schema):
    lookback_days = fields.Integer(
        strict=True,
        load_default=7,
        validate=validate.Range(min=0, max=90),
        metadata={"description": "Preview the tickets resolved in the last N days."},
    )


class DecisionSchema(Schema):
    ticket_id = fields.String()
    requester_email = fields.String(allow_none=True)
    resolved_at = fields.DateTime(allow_none=True)
    send = fields.Boolean(metadata={"description": "Whether the ticket would get a survey."})
    skip_reason = fields.String(allow_none=True)


class DryRunSchema(Schema):
    seen = fields.Integer()
    would_send = fields.Integer()
    already_decided = fields.Integer()
    skipped = fields.Dict(keys=fields.String(), values=fields.Integer())
    tickets = fields.List(
        fields.Nested(DecisionSchema), metadata={"description": "The first 100 tickets."}
    )


class ActivateSchema(Schema):
    lookback_days = fields.Integer(
        strict=True,
        load_default=0,
        validate=validate.Range(min=0, max=90),
        metadata={"description": "Also survey tickets resolved in the last N days."},
    )


class RatingSchema(Schema):
    id = fields.Integer()
    survey_id = fields.Integer()
    metric = fields.String()
    ticket_id = fields.String()
    requester_email = fields.String(
        allow_none=True, metadata={"description": "The customer's address (null for agents)."}
    )
    agent_ref = fields.String(allow_none=True, metadata={"description": "Helpdesk user id."})
    value = fields.Integer(metadata={"description": "The raw answer on its scale."})
    scale = fields.Integer()
    group = fields.String(metadata={"description": "e.g. promoter, negative."})
    comment = fields.String()
    suspected_scanner = fields.Boolean()
    created_at = fields.DateTime()
    commented_at = fields.DateTime(allow_none=True)


class RatingPageSchema(Schema):
    items = fields.List(fields.Nested(RatingSchema))
    next_cursor = fields.String(
        allow_none=True, metadata={"description": "Pass as `cursor` for the next page."}
    )


class ExportQuerySchema(Schema):
    survey = fields.Integer(validate=ID)
    metric = fields.String(validate=validate.Length(min=1, max=50))
    agent = fields.String(
        validate=[validate.Length(min=1, max=100), PRINTABLE],
        metadata={"description": "Helpdesk user id the rating is attributed to."},
    )
    group = fields.String(
        validate=validate.Length(min=1, max=30),
        metadata={"description": "The metric's group, e.g. detractor, promoter, negative."},
    )
    since = fields.Date(data_key="from", metadata={"description": "First UTC day (YYYY-MM-DD)."})
    until = fields.Date(data_key="to", metadata={"description": "Last UTC day, included."})


CURSOR = fields.String(
    validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,24}$"),
    metadata={"description": "A `next_cursor` from the previous page."},
)


class RatingQuerySchema(ExportQuerySchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = CURSOR


class StatsQuerySchema(Schema):
    survey = fields.Integer(validate=validate.Range(min=1, max=MAX_ID))
    metric = fields.String(validate=validate.Length(min=1, max=50))
    by = fields.String(
        validate=validate.OneOf(["agent", "day", "week", "survey"]),
        metadata={
            "description": "Also a score per agent, UTC day, week (from Monday) or survey "
            "(with `metric`), in `series`."
        },
    )
    since = fields.Date(data_key="from", metadata={"description": "First UTC day."})
    until = fields.Date(data_key="to", metadata={"description": "Last UTC day, included."})


class ScoreSchema(Schema):
    scale = fields.Integer()
    value = fields.Float(allow_none=True)
    unit = fields.String()
    n = fields.Integer()
    margin = fields.Float(allow_none=True, metadata={"description": "95% margin of error."})
    formula = fields.String()
    groups = fields.Dict(keys=fields.String(), values=fields.Integer())


class ResponseRateSchema(Schema):
    sent = fields.Integer()
    rated = fields.Integer()
    rate = fields.Float(allow_none=True, metadata={"description": "Percent."})


class FunnelSchema(Schema):
    stages = fields.Dict(keys=fields.String(), values=fields.Integer())
    skipped = fields.Dict(keys=fields.String(), values=fields.Integer())
    not_sent = fields.Dict(keys=fields.String(), values=fields.Integer())


class SeriesScoreSchema(ScoreSchema):
    key = fields.String(
        metadata={"description": "The agent's helpdesk id, the first day, or the survey id."}
    )
    label = fields.String(metadata={"description": "The agent's or survey's name, or the day."})


class StatsSchema(Schema):
    metric = fields.String()
    survey_id = fields.Integer(allow_none=True)
    scores = fields.List(fields.Nested(ScoreSchema))
    series = fields.List(
        fields.Nested(SeriesScoreSchema), metadata={"description": "With `by`: one per row."}
    )
    response_rate = fields.Nested(ResponseRateSchema)
    funnel = fields.Nested(FunnelSchema, allow_none=True)


class ConnectionSchema(Schema):
    id = fields.Integer()
    helpdesk = fields.String()
    name = fields.String(metadata={"description": "The helpdesk account."})
    settings = fields.Dict(
        keys=fields.String(), metadata={"description": "Settings that are not secret."}
    )
    status = fields.String()
    status_message = fields.String()
    created_at = fields.DateTime()


class ConnectionCreateSchema(Schema):
    helpdesk = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=50), PRINTABLE],
        metadata={"description": "An installed helpdesk plugin's key, e.g. kustomer."},
    )
    settings = fields.Dict(
        required=True,
        keys=fields.String(validate=validate.Length(max=100)),
        metadata={
            "description": "The helpdesk's connection fields, secrets (API keys) included; "
            "see the plugin's fields on GET /helpdesks. Secrets are checked with the "
            "helpdesk, kept encrypted and never returned."
        },
    )


class HelpdeskFieldSchema(Schema):
    name = fields.String()
    label = fields.String()
    secret = fields.Boolean()
    required = fields.Boolean()
    help = fields.String()


class HelpdeskSchema(Schema):
    key = fields.String()
    title = fields.String()
    fields = fields.List(fields.Nested(HelpdeskFieldSchema))


class HelpdeskUserSchema(Schema):
    id = fields.String(metadata={"description": "The helpdesk user id."})
    name = fields.String()
    email = fields.String()
    account_id = fields.Integer(allow_none=True, metadata={"description": "The hub user."})


class UserSchema(Schema):
    id = fields.Integer()
    email = fields.String()
    name = fields.String()
    role = fields.String(metadata={"description": "admin or agent"})
    status = fields.String(metadata={"description": "invited, active or archived"})
    connection_id = fields.Integer(allow_none=True)
    helpdesk_user_id = fields.String(allow_none=True)
    invited_at = fields.DateTime(allow_none=True)
    last_login_at = fields.DateTime(allow_none=True)


class InviteSchema(Schema):
    connection_id = fields.Integer(strict=True, required=True, validate=ID)
    helpdesk_user_ids = fields.List(
        fields.String(validate=[validate.Length(min=1, max=100), PRINTABLE]),
        required=True,
        validate=validate.Length(min=1, max=500),
        metadata={"description": "Ids from GET /connections/{id}/helpdesk-users."},
    )


class InvitedSchema(Schema):
    invited = fields.List(fields.Nested(UserSchema))
    failed = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        metadata={"description": "Address → why the email was not sent."},
    )
    unknown = fields.List(fields.String(), metadata={"description": "Ids the helpdesk lacks."})


class WriteBackStateSchema(Schema):
    state = fields.String()
    attempts = fields.Integer()
    last_error = fields.String()
    done_at = fields.DateTime(allow_none=True)


class DeliverySchema(Schema):
    id = fields.Integer()
    survey_id = fields.Integer()
    ticket_id = fields.String()
    ticket_url = fields.String(
        allow_none=True, metadata={"description": "The ticket's page in the helpdesk."}
    )
    requester_email = fields.String(allow_none=True)
    agent_ref = fields.String(allow_none=True)
    state = fields.String(metadata={"description": ", ".join(s.value for s in DeliveryState)})
    skip_reason = fields.String(allow_none=True)
    error = fields.String()
    resolved_at = fields.DateTime(allow_none=True)
    sent_at = fields.DateTime(allow_none=True)
    opened_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    rating_id = fields.Integer(allow_none=True)
    write_back = fields.Nested(
        WriteBackStateSchema,
        allow_none=True,
        metadata={"description": "The rating's latest write-back to the helpdesk."},
    )


class DeliveryExportQuerySchema(Schema):
    survey = fields.Integer(validate=ID)
    state = fields.String(validate=validate.OneOf([s.value for s in DeliveryState]))
    skip_reason = fields.String(validate=validate.OneOf(sorted(REASONS)))
    agent = fields.String(validate=[validate.Length(min=1, max=100), PRINTABLE])
    since = fields.Date(data_key="from", metadata={"description": "First UTC day found."})
    until = fields.Date(data_key="to", metadata={"description": "Last UTC day, included."})


class DeliveryQuerySchema(DeliveryExportQuerySchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = CURSOR


class DeliveryPageSchema(Schema):
    items = fields.List(fields.Nested(DeliverySchema))
    next_cursor = fields.String(allow_none=True)
