"""The API's marshmallow schemas: query arguments and the resources it returns (the
OpenAPI document is generated from these)."""

from __future__ import annotations

from marshmallow import Schema
from marshmallow import fields
from marshmallow import validate

MAX_ID = 2**31 - 1


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


class ActivateSchema(Schema):
    lookback_days = fields.Integer(
        load_default=0,
        validate=validate.Range(min=0, max=90),
        metadata={"description": "Also survey tickets resolved in the last N days."},
    )


class RatingSchema(Schema):
    id = fields.Integer()
    survey_id = fields.Integer()
    metric = fields.String()
    ticket_id = fields.String()
    requester_email = fields.String(allow_none=True)
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


class RatingQuerySchema(Schema):
    survey = fields.Integer(validate=validate.Range(min=1, max=MAX_ID))
    metric = fields.String(validate=validate.Length(min=1, max=50))
    agent = fields.String(
        validate=[validate.Length(min=1, max=100), validate.Regexp(r"^[\x20-\x7e]+$")]
    )
    group = fields.String(validate=validate.Length(min=1, max=30))
    since = fields.Date(data_key="from", metadata={"description": "First UTC day (YYYY-MM-DD)."})
    until = fields.Date(data_key="to", metadata={"description": "Last UTC day, included."})
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,24}$"))


class StatsQuerySchema(Schema):
    survey = fields.Integer(validate=validate.Range(min=1, max=MAX_ID))
    metric = fields.String(validate=validate.Length(min=1, max=50))
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


class StatsSchema(Schema):
    metric = fields.String()
    survey_id = fields.Integer(allow_none=True)
    scores = fields.List(fields.Nested(ScoreSchema))
    response_rate = fields.Nested(ResponseRateSchema)
    funnel = fields.Nested(FunnelSchema, allow_none=True)
