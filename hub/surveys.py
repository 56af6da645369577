"""Survey settings: the trigger and email options of one survey, with their defaults."""

from __future__ import annotations

from typing import Any

from flask import current_app
from marshmallow import EXCLUDE
from marshmallow import Schema
from marshmallow import fields
from marshmallow import validate

from hub.contracts import Metric
from hub.extensions import db
from hub.i18n import LANGUAGES
from hub.models import Connection
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

    delay_hours = fields.Integer(
        validate=validate.Range(min=0, max=24 * 60),
        metadata={
            "label": "Delay (hours)",
            "help": "Hours without any ticket update after it is resolved before the survey "
            "goes out. The hub's own notes do not count as updates.",
        },
    )
    channels = fields.List(
        fields.String(),
        validate=validate.Length(min=1),
        metadata={
            "label": "Channels",
            "help": "Survey tickets the customer opened through these channels "
            "(comma-separated, e.g. email, chat).",
        },
    )
    resolved_statuses = fields.List(
        fields.String(),
        validate=validate.Length(min=1),
        metadata={
            "label": "Resolved statuses",
            "help": "Ticket statuses that count as resolved (Kustomer: done).",
        },
    )
    excluded_tags = fields.List(
        fields.String(),
        metadata={
            "label": "Excluded tags",
            "help": "Tickets with any of these tag ids get no survey (comma-separated).",
        },
    )
    require_assignee = fields.Boolean(metadata={"label": "Only tickets with a human assignee"})
    skip_helpdesk_surveyed = fields.Boolean(
        metadata={"label": "Skip tickets the helpdesk's own satisfaction survey asked about"}
    )
    cooldown_days = fields.Integer(
        validate=validate.Range(min=0, max=3650),
        metadata={
            "label": "Cooldown (days)",
            "help": "Do not survey the same email address again within this many days "
            "(0: every ticket).",
        },
    )
    reminder_days = fields.Integer(
        allow_none=True,
        validate=validate.Range(min=1, max=60),
        metadata={
            "label": "Reminder after (days)",
            "help": "Send one reminder this many days after the survey if there is no "
            "answer. Leave empty for no reminder.",
        },
    )
    sender_name = fields.String(
        validate=[validate.Length(min=1, max=100), _ONE_LINE],
        metadata={"label": "Sender name"},
    )
    reply_to = fields.Email(allow_none=True, metadata={"label": "Reply-to address"})
    subject = fields.String(
        allow_none=True,
        validate=[validate.Length(max=200), _ONE_LINE],
        metadata={
            "label": "Subject",
            "help": "Empty: the default subject in the customer's language.",
        },
    )
    intro = fields.String(
        allow_none=True,
        validate=validate.Length(max=2000),
        metadata={
            "label": "Intro text",
            "widget": "textarea",
            "help": "Empty: the default greeting. {company} is replaced by the company name.",
        },
    )
    question = fields.String(
        allow_none=True,
        validate=validate.Length(max=500),
        metadata={
            "label": "Question",
            "widget": "textarea",
            "help": "Empty: the metric's default question. {company} is replaced by "
            "the company name.",
        },
    )
    brand_color = fields.String(
        validate=validate.Regexp(r"^#[0-9a-fA-F]{6}$", error="Use a colour like #2f5bea."),
        metadata={"label": "Brand colour", "widget": "color"},
    )
    company_name = fields.String(
        validate=[validate.Length(min=1, max=100), _ONE_LINE],
        metadata={"label": "Company name"},
    )
    attribute_name = fields.String(
        validate=validate.Regexp(
            r"^[a-z][A-Za-z0-9]*Num$",
            error="Use letters and digits, starting lower-case and ending in Num "
            "(e.g. surveyhubNpsScoreNum).",
        ),
        metadata={
            "label": "Custom attribute",
            "help": "The number attribute on the conversation that receives the score.",
        },
    )
    add_note = fields.Boolean(metadata={"label": "Add a note with the rating to the ticket"})
    link_expiry_days = fields.Integer(
        validate=validate.Range(min=1, max=365),
        metadata={"label": "Links expire after (days)"},
    )
    language = fields.String(
        validate=validate.OneOf(["auto", *LANGUAGES]),
        metadata={
            "label": "Language",
            "choices": {"auto": "The customer's language", "en": "English", "de": "German"},
        },
    )


#: For `effective_settings` (read on every rating page): building a schema costs more
#: than loading with it, and a schema keeps no state between loads.
_SETTINGS = SurveySettingsSchema()


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
    return metric_named(survey.metric, survey.id)


def metric_named(key: str, survey_id: int | None = None) -> Metric:
    """The metric `key` (of survey `survey_id`), or `MetricMissing` naming the plugin."""
    try:
        return current_app.extensions["hub"].registry.metrics[key]
    except KeyError:
        raise MetricMissing(
            f"Survey {survey_id} uses the metric '{key}', which no installed "
            "plugin provides (install or unblock it)."
        ) from None


def settings_of(survey: Survey) -> dict[str, Any]:
    """The survey's settings over its metric's defaults, validated."""
    return effective_settings(metric_of(survey), survey.settings or {})


def effective_settings(metric: Metric, stored: dict[str, Any]) -> dict[str, Any]:
    """Stored settings over the defaults, validated (raises marshmallow.ValidationError)."""
    merged = defaults(metric, stored.get("company_name") or "our team")
    merged.update(_SETTINGS.load(stored))
    return merged


def company_guess(account: str) -> str:
    """A first guess at the company name from the helpdesk account ("acme.kustomerapp.com"
    gives "Acme"); the admin sets the real one in the trigger settings."""
    label = account.split(".")[0].split(":")[0]
    return label.capitalize() if label.isalpha() else "our team"


def new_survey(
    metric: Metric,
    name: str,
    scale: int,
    connection: Connection,
    settings: dict[str, Any] | None = None,
) -> Survey:
    """A new, inactive survey of `metric` on `connection` (added to the session, not
    committed); settings not given take the defaults."""
    survey = Survey(
        connection=connection,
        metric=metric.key,
        scale=scale,
        name=name,
        settings={"company_name": company_guess(connection.name), **(settings or {})},
    )
    db.session.add(survey)
    return survey
