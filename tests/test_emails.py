"""The survey email, received by a real SMTP server and parsed like a mail client would."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from hub.emails import Suppressed
from hub.emails import preview_email
from hub.emails import send_survey
from hub.mail import Mailer
from hub.suppressions import suppress
from tests.conftest import add_delivery

LINK = re.compile(r"https?://[^\s\"'<>]+/r/[A-Za-z0-9_.\-]+/(-?\d+)")


def score_links(text: str) -> list[int]:
    return [int(score) for score in LINK.findall(text)]


def send(app, **kwargs):
    with app.app_context():
        delivery = add_delivery(**kwargs)
        with Mailer(app.config) as mailer:
            send_survey(delivery, mailer)


def received(smtp_server):
    (message,) = smtp_server.handler.messages
    return message


@pytest.mark.parametrize(
    ("metric", "scale", "scores"),
    [
        ("nps", 11, list(range(11))),
        ("csat", 3, [1, 2, 3]),
        ("csat", 5, [1, 2, 3, 4, 5]),
        ("csat", 2, [1, 2]),
        ("ces", 7, list(range(1, 8))),
    ],
)
def test_email_carries_every_score_link_in_both_parts(mail_app, smtp_server, metric, scale, scores):
    send(mail_app, metric=metric, scale=scale)
    message = received(smtp_server)
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert score_links(text) == scores
    assert score_links(html) == scores


def test_email_headers_come_from_the_survey_settings(mail_app, smtp_server):
    send(
        mail_app,
        sender_name="Acme Support",
        reply_to="help@acme.example",
        subject="Quick question about your ticket",
    )
    message = received(smtp_server)
    assert message["From"] == f"Acme Support <{mail_app.config['MAIL_FROM']}>"
    assert message["To"] == "Jane Doe <jane@example.com>"
    assert message["Reply-To"] == "help@acme.example"
    assert message["Subject"] == "Quick question about your ticket"
    assert re.fullmatch(r"<.+@.+>", message["Message-ID"])
    assert re.fullmatch(r"<http://localhost:5000/u/[^>]+>", message["List-Unsubscribe"])
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_email_text_uses_company_question_and_brand_colour(mail_app, smtp_server):
    send(mail_app, brand_color="#aa3300", intro="We fixed your order.")
    message = received(smtp_server)
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert "How likely are you to recommend Acme to a friend or colleague?" in text
    assert "We fixed your order." in html
    assert "background:#aa3300" in html
    assert "<script" not in html.lower()
    assert message["Subject"] == "How did we do?"


def test_unsubscribed_address_is_never_sent_to(mail_app, smtp_server):
    with mail_app.app_context():
        delivery = add_delivery(email="Jane@Example.com")
        suppress("jane@example.com", "unsubscribed")
        with Mailer(mail_app.config) as mailer, pytest.raises(Suppressed):
            send_survey(delivery, mailer)
    assert smtp_server.handler.envelopes == []


def test_preview_uses_sample_data(app):
    with app.app_context():
        survey = add_delivery(metric="csat", scale=5).survey
        message = preview_email(survey)
    assert message["To"] == "Jane Doe <jane.doe@example.com>"
    assert score_links(message.get_body(("plain",)).get_content()) == [1, 2, 3, 4, 5]


def test_preview_command_prints_the_email(app, runner):
    with app.app_context():
        survey_id = add_delivery(metric="ces", scale=7).survey_id
    from hub.cli import cli

    result = runner.invoke(cli, ["preview", str(survey_id)])
    assert result.exit_code == 0, result.output
    assert "Subject: How did we do?" in result.output
    assert "Acme made it easy for me to handle my issue." in result.output
    assert runner.invoke(cli, ["preview", "999"]).exit_code == 1


def spamassassin_score(raw: bytes) -> float:
    result = subprocess.run(
        ["spamassassin", "-L", "-t"], input=raw, capture_output=True, timeout=120
    )
    status = re.search(rb"X-Spam-Status: \w+, score=(-?[\d.]+)", result.stdout)
    assert status, result.stdout[-2000:] + result.stderr[-2000:]
    return float(status.group(1))


@pytest.mark.skipif(
    not shutil.which("spamassassin") and not os.environ.get("CI"),
    reason="spamassassin is not installed (apt-get install spamassassin); CI installs it",
)
@pytest.mark.parametrize(("metric", "scale"), [("nps", 11), ("csat", 3), ("ces", 7)])
def test_default_email_scores_low_with_spamassassin(mail_app, smtp_server, metric, scale):
    send(mail_app, metric=metric, scale=scale)
    score = spamassassin_score(smtp_server.handler.envelopes[0].content)
    assert score < 2.0, score


def test_header_fields_must_be_one_line():
    from marshmallow import ValidationError

    from hub.surveys import SurveySettingsSchema

    with pytest.raises(ValidationError, match="single line"):
        SurveySettingsSchema().load({"subject": "Hi\r\nBcc: victim@example.com"})


def test_a_line_break_in_the_requesters_name_does_not_break_sending(mail_app, smtp_server):
    with mail_app.app_context():
        delivery = add_delivery()
        delivery.requester_name = "Jane\r\nDoe"
        with Mailer(mail_app.config) as mailer:
            send_survey(delivery, mailer)
    assert received(smtp_server)["To"] == "Jane Doe <jane@example.com>"


@pytest.mark.parametrize(("brand", "text"), [("#2f5bea", "#ffffff"), ("#f5d142", "#1d2433")])
def test_button_text_contrasts_with_the_brand_colour(mail_app, smtp_server, brand, text):
    send(mail_app, brand_color=brand)
    html = received(smtp_server).get_body(("html",)).get_content()
    assert f'bgcolor="{brand}"' in html
    assert f"color:{text};" in html


def test_unsubscribe_link_is_in_both_parts(mail_app, smtp_server):
    send(mail_app)
    message = received(smtp_server)
    url = message["List-Unsubscribe"].strip("<>")
    assert url in message.get_body(("plain",)).get_content()
    assert url in message.get_body(("html",)).get_content()
