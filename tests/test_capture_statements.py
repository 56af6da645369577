"""What the rating pages cost in SQL statements, on SQLite and PostgreSQL: the page is
one statement (two the first time it is opened), an answer four. docs/performance.md
explains each; a change that adds one shows up here, not in a clock."""

from __future__ import annotations

import pytest
from sqlalchemy import event
from sqlalchemy import select

from hub.extensions import db
from hub.links import rating_token
from hub.models import Delivery
from hub.models import Rating
from hub.models import WriteBack
from tests.conftest import add_delivery


@pytest.fixture
def statements(app):
    """The SQL statements the app sends, as the first word and table of each."""
    seen: list[str] = []
    with app.app_context():
        engine = db.engine

    def count(conn, cursor, statement, parameters, context, executemany):
        words = statement.split()
        table = next(
            (words[i + 1] for i, word in enumerate(words) if word in ("FROM", "INTO", "UPDATE")),
            "",
        )
        seen.append(f"{words[0]} {table}")

    event.listen(engine, "before_cursor_execute", count)
    yield seen
    event.remove(engine, "before_cursor_execute", count)


@pytest.fixture
def link(app):
    with app.app_context():
        delivery_id = add_delivery().id
    with app.test_request_context():
        return delivery_id, rating_token(delivery_id)


def opened_at(app, delivery_id):
    with app.app_context():
        return db.session.get(Delivery, delivery_id).opened_at


def test_the_rating_page_is_one_statement_once_opened(app, client, link, statements):
    delivery_id, token = link
    assert client.get(f"/r/{token}/9").status_code == 200
    assert statements == ["SELECT deliveries", "UPDATE deliveries"]  # the first view
    first = opened_at(app, delivery_id)
    assert first is not None
    statements.clear()
    assert client.get(f"/r/{token}/7").status_code == 200
    assert statements == ["SELECT deliveries"]
    assert opened_at(app, delivery_id) == first


def test_an_answer_is_four_statements(app, client, link, statements):
    delivery_id, token = link
    client.get(f"/r/{token}/9")
    statements.clear()
    response = client.post(f"/r/{token}/9", data={"auto": "1"})
    assert response.status_code == 303
    assert statements == [
        "SELECT deliveries",  # with its survey and whether it was rated
        "INSERT ratings",
        "INSERT write_backs",  # with its note's external id: no UPDATE after
        "SELECT webhook_subscriptions",  # who wants rating.created
    ]
    with app.app_context():
        rating = db.session.execute(select(Rating)).scalar_one()
        assert (rating.delivery_id, rating.value, rating.suspected_scanner) == (
            delivery_id, 9, False
        )  # fmt: skip
        (write_back,) = db.session.execute(select(WriteBack)).scalars()
        assert (write_back.rating_id, write_back.state, write_back.kind) == (
            rating.id, "pending", "score"
        )  # fmt: skip
        assert write_back.note_external_id.startswith(f"surveyhub:{rating.id}:")


def test_an_unopened_answer_notes_the_opening_in_its_transaction(app, client, link, statements):
    delivery_id, token = link
    assert client.post(f"/r/{token}/9").status_code == 303
    assert statements[:3] == ["SELECT deliveries", "UPDATE deliveries", "INSERT ratings"]
    assert len(statements) == 5
    assert opened_at(app, delivery_id) is not None


def test_each_write_back_has_its_own_note_external_id(app, client, link):
    _, token = link
    client.post(f"/r/{token}/9")
    with app.app_context():
        first = db.session.execute(select(WriteBack)).scalar_one()
        first.state = "done"  # written back: a changed score needs a new note
        db.session.commit()
    client.post(f"/r/{token}/4")
    with app.app_context():
        ids = db.session.execute(select(WriteBack.note_external_id)).scalars().all()
    assert len(ids) == 2 and len(set(ids)) == 2, ids


def test_a_changed_answer_reads_its_rows(app, client, link, statements):
    _, token = link
    client.get(f"/r/{token}/9")
    client.post(f"/r/{token}/9")
    statements.clear()
    assert client.post(f"/r/{token}/4").status_code == 303
    assert statements == [
        "SELECT deliveries",  # the narrow row says it was rated, with another score
        "SELECT deliveries",  # the delivery, survey and rating as ORM rows, to change
        "UPDATE ratings",
        "SELECT write_backs",
        "UPDATE write_backs",  # the pending one carries the new score
        "SELECT webhook_subscriptions",  # who wants rating.updated
    ]
    statements.clear()
    assert client.post(f"/r/{token}/4").status_code == 303  # the same again: nothing
    assert statements == ["SELECT deliveries"]


def test_the_comment_page_notes_a_first_opening_in_one_statement(app, client, link, statements):
    delivery_id, token = link
    assert client.get(f"/r/{token}/comment").status_code == 200  # no score yet: choose one
    assert statements == ["SELECT deliveries", "UPDATE deliveries"]
    assert opened_at(app, delivery_id) is not None


def test_the_same_score_again_notes_an_opening_never_noted(app, client, link):
    """A delivery rated before openings were recorded: posting its score again notes it,
    as any answer does."""
    delivery_id, token = link
    assert client.post(f"/r/{token}/9").status_code == 303
    with app.app_context():
        db.session.get(Delivery, delivery_id).opened_at = None
        db.session.commit()
    assert client.post(f"/r/{token}/9").status_code == 303
    assert opened_at(app, delivery_id) is not None
