"""The survey email: built from the metric and the survey's settings, previewed, sent."""

from __future__ import annotations

from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from email.utils import make_msgid
from typing import Any

from flask import current_app
from flask import render_template
from flask_babel import force_locale
from flask_babel import gettext

from hub.contracts import Metric
from hub.i18n import survey_language
from hub.links import rating_token
from hub.links import unsubscribe_token
from hub.mail import Mailer
from hub.mail import new_message
from hub.models import Delivery
from hub.models import Survey
from hub.suppressions import is_suppressed
from hub.surveys import metric_of
from hub.surveys import settings_of
from hub.surveys import text_color_on


class Suppressed(Exception):
    """The requester unsubscribed (or was suppressed); nothing is sent to them."""


@dataclass(frozen=True)
class Recipient:
    """Who an email goes to; a real delivery or the preview's sample person."""

    delivery_id: int
    email: str
    name: str
    locale: str | None


SAMPLE_RECIPIENT = Recipient(0, "jane.doe@example.com", "Jane Doe", None)


def _link(path: str) -> str:
    return f"{current_app.config['HUB_BASE_URL']}{path}"


def _context(
    survey: Survey, metric: Metric, settings: dict[str, Any], recipient: Recipient
) -> dict[str, Any]:
    """Everything the survey email templates show, in the current locale."""
    company = settings["company_name"]
    token = rating_token(recipient.delivery_id)
    points = [
        {
            "value": point.value,
            "label": gettext(point.label),
            "symbol": point.symbol,
            "url": _link(f"/r/{token}/{point.value}"),
        }
        for point in metric.points(survey.scale)
    ]
    question = settings["question"] or gettext(metric.default_question)
    intro = settings["intro"] or gettext(
        "Thank you for contacting %(company)s. Your request has been resolved; one click "
        "below tells us how we did.",
        company=company,
    )
    if len(points) > 7:
        layout = "numbers"
    elif len(points) == 7:
        layout = "list"
    else:
        layout = "row"
    return {
        "metric": metric,
        "settings": settings,
        "company": company,
        "name": recipient.name,
        "intro": intro,
        "question": question.replace("{company}", company),
        "points": points,
        "layout": layout,
        "brand_color": settings["brand_color"],
        "brand_text": text_color_on(settings["brand_color"]),
        "subject": settings["subject"] or gettext("How did we do?"),
        "unsubscribe_url": _link(f"/u/{unsubscribe_token(recipient.delivery_id)}"),
    }


def build_email(
    survey: Survey,
    recipient: Recipient,
    reminder: bool = False,
    settings: dict[str, Any] | None = None,
) -> EmailMessage:
    """The multipart (plain text + HTML) survey email for one recipient; `settings` are
    the survey's (`settings_of`), when a job sending many has them already."""
    metric = metric_of(survey)
    if settings is None:
        settings = settings_of(survey)
    locale = survey_language(settings["language"], recipient.locale)
    with force_locale(locale):
        context = _context(survey, metric, settings, recipient)
        context["locale"] = locale
        if reminder:
            context["subject"] = gettext("Reminder: %(subject)s", subject=context["subject"])
        text = render_template("email/survey.txt", **context)
        html = render_template("email/survey.html", **context)
    mail_from = current_app.config["MAIL_FROM"]
    message = new_message()
    message["Subject"] = context["subject"]
    # Header objects, never string concatenation: one mailbox each, names encoded.
    message["From"] = Address(display_name=settings["sender_name"], addr_spec=mail_from)
    message["To"] = Address(display_name=recipient.name, addr_spec=recipient.email)
    if settings["reply_to"]:
        message["Reply-To"] = settings["reply_to"]
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid("survey", domain=mail_from.rpartition("@")[2] or None)
    message["List-Unsubscribe"] = f"<{context['unsubscribe_url']}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    # After the parts exist: add_alternative moves Content-* headers into the first part.
    message["Content-Language"] = locale
    return message


def recipient_of(delivery: Delivery) -> Recipient:
    # Names come from the helpdesk; a stray line break must not break the To: header.
    name = " ".join(delivery.requester_name.split())
    return Recipient(delivery.id, delivery.requester_email or "", name, delivery.locale)


def preview_email(survey: Survey) -> EmailMessage:
    """The survey's email with sample data (its links lead to a 'not valid' page)."""
    return build_email(survey, SAMPLE_RECIPIENT)


def send_survey(delivery: Delivery, mailer: Mailer) -> EmailMessage:
    """Send `delivery`'s survey email; raises `Suppressed` for an unsubscribed address."""
    if not delivery.requester_email or is_suppressed(delivery.requester_email):
        raise Suppressed(delivery.requester_email)
    message = build_email(delivery.survey, recipient_of(delivery))
    mailer.send(message)
    return message
