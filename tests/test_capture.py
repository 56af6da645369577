"""One-click rating capture, comments and unsubscribe, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from hub import hookimpl
from hub.extensions import db
from hub.links import rating_token
from hub.links import unsubscribe_token
from hub.models import Rating
from hub.models import Suppression
from hub.models import utcnow
from hub.suppressions import suppression_hash
from tests.conftest import add_delivery


class Events:
    """A throwaway plugin recording the capture hooks."""

    def __init__(self) -> None:
        self.ratings: list[tuple[int, int]] = []
        self.comments: list[str] = []

    @hookimpl
    def rating_received(self, rating):
        self.ratings.append((rating.delivery_id, rating.value))

    @hookimpl
    def comment_received(self, rating):
        self.comments.append(rating.comment)


@pytest.fixture
def events(app):
    plugin = Events()
    app.extensions["hub"].registry._pm.register(plugin)
    return plugin


@pytest.fixture
def delivery_id(app):
    with app.app_context():
        return add_delivery().id


@pytest.fixture
def token(app, delivery_id):
    with app.test_request_context():
        return rating_token(delivery_id)


def ratings(app) -> list[Rating]:
    with app.app_context():
        return db.session.execute(select(Rating)).scalars().all()


def test_a_plain_get_records_nothing(app, client, token):
    page = client.get(f"/r/{token}/9")
    assert page.status_code == 200
    assert 'method="post"' in page.text
    assert "<button" in page.text  # usable with scripts off
    assert ratings(app) == []


def test_the_post_records_the_raw_value_and_scale(app, client, token, events, delivery_id):
    response = client.post(f"/r/{token}/9")
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/r/{token}/comment")
    (rating,) = ratings(app)
    assert (rating.value, rating.scale, rating.agent_ref) == (9, 11, "agent-7")
    assert events.ratings == [(delivery_id, 9)]


def test_the_hook_reaches_the_ticket_and_survey_as_documented(app, client, token):
    """docs/hooks.md: `rating.delivery` leads to the ticket and the survey, for a first
    score (stored with Core statements) as for a changed one (ORM rows)."""
    seen = []

    class Reader:
        @hookimpl
        def rating_received(self, rating):
            delivery = rating.delivery
            seen.append((delivery.ticket_id, delivery.survey.metric, rating.value, rating.id))

    app.extensions["hub"].registry._pm.register(Reader())
    assert client.post(f"/r/{token}/9").status_code == 303
    assert client.post(f"/r/{token}/3").status_code == 303
    (rating,) = ratings(app)
    with app.app_context():
        ticket = db.session.get(Rating, rating.id).delivery.ticket_id
    assert seen == [(ticket, "nps", 9, rating.id), (ticket, "nps", 3, rating.id)]


def test_a_first_score_that_lost_the_race_keeps_nothing(app, delivery_id):
    """Two first clicks both read "not rated": the second INSERT is refused by the unique
    delivery, its write-back is not kept either, and the view then changes the rating
    the first one made (record_score)."""
    from hub.models import Delivery
    from hub.models import WriteBack
    from hub.ratings import record_first_score

    with app.test_request_context():
        delivery = db.session.get(Delivery, delivery_id)
        args = (delivery.id, delivery.survey_id, delivery.agent_ref)
        db.session.rollback()
        first = record_first_score(*args, 9, 11)
        assert first is not None and first.value == 9
        first_id = first.id
        assert record_first_score(*args, 4, 11) is None
        kept = db.session.execute(select(Rating.value)).scalars().all()
        write_backs = db.session.execute(select(WriteBack)).scalars().all()
    assert kept == [9]
    assert [w.rating_id for w in write_backs] == [first_id]


def test_repeated_posts_are_idempotent(app, client, token, events):
    client.post(f"/r/{token}/9")
    client.post(f"/r/{token}/9")
    assert len(ratings(app)) == 1
    assert len(events.ratings) == 1


def test_second_score_within_15_minutes_replaces_the_first(app, client, token, events):
    client.post(f"/r/{token}/3")
    client.post(f"/r/{token}/8")
    (rating,) = ratings(app)
    assert rating.value == 8
    assert [value for _, value in events.ratings] == [3, 8]


def test_score_after_15_minutes_is_refused_politely(app, client, token, events):
    client.post(f"/r/{token}/3")
    with app.app_context():
        rating = db.session.execute(select(Rating)).scalar_one()
        rating.created_at = utcnow() - timedelta(minutes=16)
        db.session.commit()
    response = client.post(f"/r/{token}/10")
    assert response.status_code == 409
    assert "already recorded" in response.text
    assert ratings(app)[0].value == 3
    assert [value for _, value in events.ratings] == [3]


@pytest.mark.parametrize("score", [11, -1, 99])
def test_out_of_range_score_gets_a_friendly_4xx(app, client, token, score):
    for method in (client.get, client.post):
        response = method(f"/r/{token}/{score}")
        assert response.status_code == 400
        assert "not on this survey" in response.text
    assert ratings(app) == []


def test_tampered_token_gets_a_friendly_4xx(app, client, token):
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for method in (client.get, client.post):
        response = method(f"/r/{tampered}/9")
        assert response.status_code == 404
        assert "not valid" in response.text
    assert ratings(app) == []


def test_token_for_an_unknown_delivery_gets_a_friendly_4xx(app, client):
    with app.test_request_context():
        token = rating_token(424242)
    assert client.get(f"/r/{token}/9").status_code == 404


def test_expired_link_gets_a_friendly_4xx(app, client, token, monkeypatch):
    import hub.web.public

    monkeypatch.setattr(hub.web.public, "utcnow", lambda: utcnow() + timedelta(days=31))
    response = client.post(f"/r/{token}/9")
    assert response.status_code == 410
    assert "closed" in response.text
    assert ratings(app) == []


def test_comment_then_thank_you(app, client, token, events):
    client.post(f"/r/{token}/9")
    form = client.get(f"/r/{token}/comment")
    assert form.status_code == 200
    assert '<label for="comment">' in form.text
    response = client.post(f"/r/{token}/comment", data={"comment": "  Fast and friendly "})
    assert response.status_code == 303
    assert client.get(response.headers["Location"]).status_code == 200
    client.post(f"/r/{token}/comment", data={"comment": "Fast and friendly"})
    (rating,) = ratings(app)
    assert rating.comment == "Fast and friendly"
    assert events.comments == ["Fast and friendly"]


def test_comment_page_without_a_score_asks_for_one(app, client, token):
    page = client.get(f"/r/{token}/comment")
    assert page.status_code == 200
    assert "choose a score first" in page.text
    assert client.post(f"/r/{token}/comment", data={"comment": "hi"}).status_code == 200
    assert ratings(app) == []


def test_hook_rating_received(app, client, token, events, delivery_id):
    client.post(f"/r/{token}/10")
    assert events.ratings == [(delivery_id, 10)]


def test_hook_comment_received(app, client, token, events):
    client.post(f"/r/{token}/10")
    client.post(f"/r/{token}/comment", data={"comment": "Great"})
    assert events.comments == ["Great"]


def test_a_failing_plugin_does_not_break_the_customers_page(app, client, token):
    class Broken:
        @hookimpl
        def rating_received(self, rating):
            raise RuntimeError("plugin bug")

    app.extensions["hub"].registry._pm.register(Broken())
    response = client.post(f"/r/{token}/9")
    assert response.status_code == 303
    assert len(ratings(app)) == 1


def suppressed(app, email: str = "jane@example.com") -> list[str]:
    """The suppression list, each entry shown as `email` when it is that address's hash
    (the list keeps hashes only)."""
    with app.app_context():
        hashes = db.session.execute(select(Suppression.email_hash)).scalars().all()
        return [email if digest == suppression_hash(email) else digest for digest in hashes]


def test_unsubscribe_page_asks_then_confirms(app, client, delivery_id):
    with app.test_request_context():
        token = unsubscribe_token(delivery_id)
    page = client.get(f"/u/{token}")
    assert page.status_code == 200
    assert "jane@example.com" in page.text
    assert suppressed(app) == []
    done = client.post(f"/u/{token}")
    assert done.status_code == 200
    assert suppressed(app) == ["jane@example.com"]
    assert "unsubscribed" in client.get(f"/u/{token}").text


def test_one_click_unsubscribe_post(app, client, delivery_id):
    with app.test_request_context():
        token = unsubscribe_token(delivery_id)
    response = client.post(
        f"/u/{token}",
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    client.post(f"/u/{token}")  # again: still one entry
    assert suppressed(app) == ["jane@example.com"]


def test_tampered_unsubscribe_link(app, client):
    assert client.post("/u/forged-token").status_code == 404
    assert suppressed(app) == []


def test_a_score_can_still_change_at_14_minutes(app, client, token):
    client.post(f"/r/{token}/3")
    with app.app_context():
        rating = db.session.execute(select(Rating)).scalar_one()
        rating.created_at = utcnow() - timedelta(minutes=14)
        db.session.commit()
    assert client.post(f"/r/{token}/8").status_code == 303
    assert ratings(app)[0].value == 8


def test_a_scanners_burst_of_clicks_does_not_lock_out_the_person(app, client, token, events):
    # A mail scanner opens every link in a real browser: each page submits itself.
    for score in (0, 1, 2, 10):
        client.post(f"/r/{token}/{score}", data={"auto": "1"})
    (rating,) = ratings(app)
    assert (rating.value, rating.suspected_scanner) == (10, True)
    with app.app_context():
        stored = db.session.execute(select(Rating)).scalar_one()
        stored.created_at = stored.updated_at = utcnow() - timedelta(hours=3)
        db.session.commit()
    # Hours later the person clicks 7 and presses the button: their answer counts...
    assert client.post(f"/r/{token}/7").status_code == 303
    (rating,) = ratings(app)
    assert (rating.value, rating.suspected_scanner) == (7, False)
    # ...and is then protected by the normal 15-minute rule.
    with app.app_context():
        stored = db.session.execute(select(Rating)).scalar_one()
        stored.created_at = utcnow() - timedelta(minutes=16)
        db.session.commit()
    assert client.post(f"/r/{token}/1", data={"auto": "1"}).status_code == 409


def test_one_automatic_submit_is_an_ordinary_answer(app, client, token):
    client.post(f"/r/{token}/9", data={"auto": "1"})
    (rating,) = ratings(app)
    assert (rating.value, rating.suspected_scanner) == (9, False)
