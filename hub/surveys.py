"""Survey settings: the trigger and email options of one survey, with their defaults."""

from __future__ import annotations

from typing import Any

from flask import current_app
from marshmallow import EXCLUDE
from marshmallow import Schema
from marshmallow import fields
from marshmallow import validate

from hub.contracts import Metric
from hub.i18n import LANGUAGES
from hub.models import Survey

BRAND_COLOR = "#2f5bea"
DARK_TEXT = "#1d2433"
LIGHT_TEXT = "#ffffff"
# Header fields go into email headers, where a line break would break the message.
_ONE_LINE = validate.Regexp(r"^[^\x00-\x1f\x7f]*$", error="Use a single line of text.")


def _luminance(hex_color: str) -> float:
    channels = [int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def text_color_on(hex_color: str) -> str:
    """White or dark text, whichever contrasts more with the brand colour (WCAG)."""
    background = _luminance(hex_color)
    on_white = 1.05 / (background + 0.05)
    on_dark = (background + 0.05) / (_luminance(DARK_TEXT) + 0.05)
    return LIGHT_TEXT if on_white >= on_dark else DARK_TEXT


class SurveySettingsSchema(Schema):
    """Validates a survey's settings; missing keys take the defaults in `defaults()`."""

    class Meta:
        unknown = EXCLUDE

    delay_hours = fields.Integer(validate=validate.Range(min=0, max=24 * 60))
    channels = fields.List(fields.String(), validate=validate.Length(min=1))
    resolved_statuses = fields.List(fields.String(), validate=validate.Length(min=1))
    excluded_tags = fields.List(fields.String())
    require_assignee = fields.Boolean()
    skip_helpdesk_surveyed = fields.Boolean()
    cooldown_days = fields.Integer(validate=validate.Range(min=0, max=3650))
    reminder_days = fields.Integer(allow_none=True, validate=validate.Range(min=1, max=60))
    sender_name = fields.String(validate=[validate.Length(min=1, max=100), _ONE_LINE])
    reply_to = fields.Email(allow_none=True)
    subject = fields.String(allow_none=True, validate=[validate.Length(max=200), _ONE_LINE])
    intro = fields.String(allow_none=True, validate=validate.Length(max=2000))
    question = fields.String(allow_none=True, validate=validate.Length(max=500))
    brand_color = fields.String(validate=validate.Regexp(r"^#[0-9a-fA-F]{6}$"))
    company_name = fields.String(validate=[validate.Length(min=1, max=100), _ONE_LINE])
    attribute_name = fields.String(validate=validate.Regexp(r"^[a-z][A-Za-z0-9]*Num$"))
    add_note = fields.Boolean()
    link_expiry_days = fields.Integer(validate=validate.Range(min=1, max=365))
    language = fields.String(validate=validate.OneOf(["auto", *LANGUAGES]))


def defaults(metric: Metric, company_name: str = "our team") -> dict[str, Any]:
    """The settings a new survey of `metric` starts with (PRODUCT.md's defaults).

    `subject`, `intro` and `question` left as None use the translated default wording.
    """
    return {
        "delay_hours": 48,
        "channels": ["email"],
        "resolved_statuses": ["done"],
        "excluded_tags": [],
        "require_assignee": True,
        "skip_helpdesk_surveyed": True,
        "cooldown_days": metric.default_cooldown_days,
        "reminder_days": None,
        "sender_name": company_name,
        "reply_to": None,
        "subject": None,
        "intro": None,
        "question": None,
        "brand_color": BRAND_COLOR,
        "company_name": company_name,
        "attribute_name": metric.attribute_name,
        "add_note": True,
        "link_expiry_days": 30,
        "language": "auto",
    }


class MetricMissing(LookupError):
    """The survey's metric plugin is not installed or is blocked."""


def metric_of(survey: Survey) -> Metric:
    """The survey's metric, or `MetricMissing` naming the plugin to install."""
    try:
        return current_app.extensions["hub"].registry.metrics[survey.metric]
    except KeyError:
        raise MetricMissing(
            f"Survey {survey.id} uses the metric '{survey.metric}', which no installed "
            "plugin provides (install or unblock it)."
        ) from None


def settings_of(survey: Survey) -> dict[str, Any]:
    """The survey's settings over its metric's defaults, validated."""
    return effective_settings(metric_of(survey), survey.settings or {})


def effective_settings(metric: Metric, stored: dict[str, Any]) -> dict[str, Any]:
    """Stored settings over the defaults, validated (raises marshmallow.ValidationError)."""
    merged = defaults(metric, stored.get("company_name") or "our team")
    merged.update(SurveySettingsSchema().load(stored))
    return merged
