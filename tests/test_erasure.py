"""Erasing a person: no table keeps the address, the stats forget the ratings, the
address stays unsubscribed for the real pipeline, the helpdesk is cleaned where its API
allows, and the API and the People page refuse what they must."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest
from flask_migrate import upgrade
from rq import Queue
from sqlalchemy import Text
from sqlalchemy import cast
from sqlalchemy import column
from sqlalchemy import func
from sqlalchemy import inspect
from sqlalchemy import select
from sqlalchemy import table
from sqlalchemy import update

from hub.app import create_app
from hub.cli import cli
from hub.erasure import erase_person
from hub.erasure import run_helpdesk_erasure
from hub.extensions import db
from hub.helpdesk import Helpdesk
from hub.helpdesk import TicketTraces
from hub.helpdesk import Unavailable
from hub.jobs import WRITE_BACKS
from hub.jobs import redis_connection
from hub.links import rating_token
from hub.models import AuditEntry
from hub.models import Delivery
from hub.models import HelpdeskErasure
from hub.models import Rating
from hub.models import Role
from hub.models import Suppression
from hub.models import Survey
from hub.models import User
from hub.models import WriteBack
from hub.models import utcnow
from hub.pipeline.recovery import reconcile
from hub.pipeline.scan import scan_survey
from hub.pipeline.send import send_delivery
from hub.pipeline.writeback import run_write_back
from hub.reports import Period
from hub.reports import Scope
from hub.reports import build_report
from hub.suppressions import is_suppressed
from hub.suppressions import suppress
from hub.suppressions import suppression_hash
from hub.tokens import create_token
from hub.webhooks.events import write_back_failed
from hub.webhooks.models import WebhookSubscription
from surveyhub_kustomer.connector import Kustomer
from tests.conftest import TEST_SECRET
from tests.conftest import acme_connection
from tests.conftest import make_config
from tests.kustomer.conftest import sandbox  # noqa: F401  (a fixture)
from tests.pipeline.conftest import hub  # noqa: F401  (a fixture)
from tests.web.conftest import add_person
from tests.web.conftest import csrf_of
from tests.web.conftest import signed_in

JANE = "jane.doe@example.com"


def token_for(app, user_id: int, scope: str = "read") -> str:
    with app.app_context():
        return create_token(db.session.get(User, user_id), "test", scope)[1]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def places_holding(app, text: str) -> set[str]:
    """Every `table.column` of the live database holding `text` in any case, found by
    asking the database itself which tables and columns it has."""
    needle = f"%{text.lower()}%"
    found = set()
    with app.app_context(), db.engine.connect() as conn:
        inspector = inspect(conn)
        for table_name in inspector.get_table_names():
            names = [c["name"] for c in inspector.get_columns(table_name)]
            rows = table(table_name, *(column(name) for name in names))
            for name in names:
                text_form = func.lower(cast(rows.c[name], Text))
                query = select(func.count()).select_from(rows).where(text_form.like(needle))
                if conn.execute(query).scalar_one():
                    found.add(f"{table_name}.{name}")
    return found


def add_answer(email: str, ticket: str, value: int, comment: str = "", state: str = "sent"):
    """A delivery of the NPS survey to `email` (as stored), answered with `value`."""
    survey = db.session.execute(select(Survey).where(Survey.metric == "nps")).scalar()
    if survey is None:
        survey = Survey(
            connection=acme_connection(),
            metric="nps",
            scale=11,
            name="NPS",
            settings={"attribute_name": "surveyhubNpsScoreNum"},
        )
        db.session.add(survey)
        db.session.flush()
    delivery = Delivery(
        survey_id=survey.id,
        ticket_id=ticket,
        requester_email=email,
        requester_name="Jane Doe" if "jane" in email.lower() else "Someone",
        agent_ref="agent-7",
        state=state,
        sent_at=utcnow() if state == "sent" else None,
    )
    db.session.add(delivery)
    db.session.flush()
    rating = Rating(
        delivery_id=delivery.id,
        survey_id=survey.id,
        agent_ref="agent-7",
        value=value,
        scale=11,
        comment=comment,
    )
    db.session.add(rating)
    db.session.flush()
    return survey, delivery, rating


@pytest.fixture
def admin_id(app):
    return add_person(app, "admin@example.com", Role.ADMIN.value)


@pytest.fixture
def jane_and_others(app):
    """Jane's data in several spellings, with a comment, a done and a failed write-back
    whose error quotes her address, on the suppression list already; and someone else's
    answer, which must survive."""
    with app.app_context():
        _, _, rating = add_answer(JANE, "t-1", 2, comment=f"Mail me at {JANE.upper()}")
        db.session.add(
            WriteBack(
                rating_id=rating.id, state="done", attempts=1, helpdesk_note_id="note-1",
                note_external_id=f"surveyhub:{rating.id}:1",
            )
        )  # fmt: skip
        _, _, second = add_answer(" Jane.Doe@Example.COM ", "t-2", 4)
        failed = WriteBack(
            rating_id=second.id, state="failed", attempts=3,
            last_error=f"Kustomer refused the note for {JANE}",
        )  # fmt: skip
        db.session.add(failed)
        # A subscriber was told of the failure, the helpdesk's words (and the address) in it.
        hook = WebhookSubscription(url="https://hooks.example.com/in", events=["writeback.failed"])
        hook.set_secret("whsec_c2VjcmV0")
        db.session.add(hook)
        db.session.flush()
        write_back_failed(failed, failed.last_error, utcnow())
        survey, _, _ = add_answer("other@example.com", "t-3", 10, comment="Great")
        db.session.add(
            Delivery(survey_id=survey.id, ticket_id="t-4", requester_email="JANE.DOE@example.com",
                     state="skipped", skip_reason="cooldown")
        )  # fmt: skip
        db.session.commit()
        suppress(JANE, "unsubscribed")
        return survey.id


def test_after_erasing_no_table_holds_the_address(app, admin_id, jane_and_others, redis_client):
    assert {
        "deliveries.requester_email",
        "ratings.comment",
        "write_backs.last_error",
        "webhook_events.data",
    } <= places_holding(app, JANE)  # the check sees the address where it is
    client = app.test_client()
    response = client.delete(
        f"/api/v1/people/{quote('Jane.Doe@EXAMPLE.com', safe='')}",
        headers=bearer(token_for(app, admin_id, "write")),
    )
    assert response.status_code == 200, response.json
    assert response.json == {
        "deliveries": 3,
        "ratings": 2,
        "comments": 1,
        "write_backs": 2,
        "helpdesk_tickets": 2,
        "outbox_messages": 0,
        "already_suppressed": True,
        "audit_entry": response.json["audit_entry"],
    }
    assert places_holding(app, JANE) == set()
    assert places_holding(app, "other@example.com") == {"deliveries.requester_email"}
    with app.app_context():
        assert is_suppressed("JANE.doe@example.com")
        assert db.session.execute(select(func.count(Suppression.id))).scalar_one() == 1
        entry = db.session.get(AuditEntry, response.json["audit_entry"])
        assert entry.action == "person.erased" and entry.actor_user_id == admin_id
        assert entry.details["suppression_hash"] == suppression_hash(JANE)
        assert entry.details["removed"]["ratings"] == 2
        tasks = db.session.execute(select(HelpdeskErasure)).scalars().all()
        assert {(t.ticket_id, tuple(t.note_ids), tuple(t.attribute_names)) for t in tasks} == {
            ("t-1", ("note-1",), ("surveyhubNpsScoreNum",)),
            ("t-2", (), ("surveyhubNpsScoreNum",)),
        }
    # The helpdesk clean-up is a job that knows the audit entry only.
    [job] = Queue(WRITE_BACKS, connection=redis_client).get_jobs()
    assert job.args == (response.json["audit_entry"],) and not job.kwargs


def test_the_stats_forget_the_erased_ratings(app, admin_id):
    with app.app_context():
        add_answer(JANE, "t-1", 0)
        add_answer("JANE.DOE@example.com", "t-2", 1)
        survey, _, _ = add_answer("a@example.com", "t-3", 10)
        add_answer("b@example.com", "t-4", 9)
        db.session.commit()
        survey_id = survey.id
        metric = app.extensions["hub"].registry.metrics["nps"]

    def report_score():
        with app.app_context():
            report = build_report(metric, Scope("nps", survey_id), Period(), [11])
            return report.parts[0].score

    def api_score():
        stats = client.get(f"/api/v1/stats?survey={survey_id}", headers=headers).json
        return stats["scores"][0], stats["response_rate"]

    client = app.test_client()
    headers = bearer(token_for(app, admin_id, "write"))
    assert (report_score().n, report_score().value) == (4, 0)
    assert api_score()[0]["n"] == 4 and api_score()[1]["rated"] == 4
    assert client.delete(f"/api/v1/people/{JANE}", headers=headers).status_code == 200
    assert (report_score().n, report_score().value) == (2, 100)
    score, rate = api_score()
    assert (score["n"], score["value"]) == (2, 100)
    assert (rate["sent"], rate["rated"]) == (2, 2)


@pytest.mark.parametrize(
    "address",
    ["jane+support@example.com", "jörg@bücher.example", "o'brien@example.com", "a%b@example.com"],
)
def test_odd_addresses_survive_the_path(app, admin_id, address):
    with app.app_context():
        add_answer(address, "t-odd", 7)
        db.session.commit()
    client = app.test_client()
    response = client.delete(
        f"/api/v1/people/{quote(address, safe='')}",
        headers=bearer(token_for(app, admin_id, "write")),
    )
    assert response.status_code == 200, response.json
    assert response.json["deliveries"] == 1
    with app.app_context():
        assert is_suppressed(address)
        assert db.session.execute(select(func.count(Delivery.id))).scalar_one() == 0


def test_erasing_again_or_erasing_a_stranger_still_suppresses(app, admin_id):
    client = app.test_client()
    headers = bearer(token_for(app, admin_id, "write"))
    first = client.delete("/api/v1/people/stranger@example.com", headers=headers)
    assert first.status_code == 200
    assert (first.json["deliveries"], first.json["already_suppressed"]) == (0, False)
    again = client.delete("/api/v1/people/Stranger@Example.com", headers=headers)
    assert again.status_code == 200 and again.json["already_suppressed"] is True
    with app.app_context():
        assert is_suppressed("stranger@example.com")
        assert db.session.execute(select(func.count(Suppression.id))).scalar_one() == 1
        assert db.session.execute(select(func.count(AuditEntry.id))).scalar_one() == 2


def test_the_api_refuses_what_it_must(app, admin_id):
    client = app.test_client()
    agent_id = add_person(app, "alex@example.com", helpdesk_user_id="agent-7")
    write = bearer(token_for(app, admin_id, "write"))
    assert client.delete(f"/api/v1/people/{JANE}").status_code == 401
    read = client.delete(f"/api/v1/people/{JANE}", headers=bearer(token_for(app, admin_id)))
    assert read.status_code == 403
    agent = bearer(token_for(app, agent_id, "write"))
    assert client.delete(f"/api/v1/people/{JANE}", headers=agent).status_code == 403
    for bad in ("not-an-address", "a@b@example.com", "x" * 400 + "@example.com", "%00@x.com"):
        response = client.delete(f"/api/v1/people/{quote(bad, safe='%')}", headers=write)
        assert response.status_code == 422, bad
        assert response.mimetype == "application/problem+json"
        assert "email" in response.json["errors"]
    user = client.delete("/api/v1/people/ALEX@example.com", headers=write)
    assert user.status_code == 409 and user.mimetype == "application/problem+json"
    assert client.get(f"/api/v1/people/{JANE}", headers=write).status_code == 405
    with app.app_context():
        assert db.session.execute(select(func.count(Suppression.id))).scalar_one() == 0


def test_the_openapi_document_describes_the_erasure(app):
    document = app.test_client().get("/api/v1/openapi.json").json
    operation = document["paths"]["/api/v1/people/{email}"]["delete"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    name = schema["$ref"].rsplit("/", 1)[1]
    assert "deliveries" in document["components"]["schemas"][name]["properties"]
    assert {p["name"] for p in operation.get("parameters", [])} | {
        p["name"] for p in document["paths"]["/api/v1/people/{email}"].get("parameters", [])
    } == {"email"}


def test_the_people_page_confirms_then_erases(app, jane_and_others):
    admin = signed_in(app, add_person(app, "admin@example.com", Role.ADMIN.value))
    page = admin.get("/people/")
    assert page.status_code == 200 and "Erase a person" in page.text
    confirm = admin.post(
        "/people/", data={"csrf_token": csrf_of(page.text), "email": "JANE.doe@example.com"}
    )
    assert confirm.status_code == 200
    assert re.search(r"<li>3 deliveries", confirm.text)
    assert "2 ratings, 1 of them with a comment" in confirm.text
    with app.app_context():
        assert db.session.execute(select(func.count(Delivery.id))).scalar_one() == 4  # not yet
    assert admin.post("/people/erase", data={"email": JANE}).status_code == 400  # no CSRF
    done = admin.post(
        "/people/erase",
        data={"csrf_token": csrf_of(confirm.text), "email": "JANE.doe@example.com"},
        follow_redirects=True,
    )
    assert done.status_code == 200
    assert "Erased: 3 deliveries, 2 ratings (1 with a comment)" in done.text
    assert JANE not in done.text.lower()  # the record of erasures does not show it
    assert places_holding(app, JANE) == set()


def test_the_people_page_is_for_admins_and_takes_any_input(app):
    agent = signed_in(app, add_person(app, "alex@example.com", helpdesk_user_id="agent-7"))
    assert agent.get("/people/").status_code == 403
    assert agent.post("/people/erase", data={"email": JANE}).status_code in (400, 403)
    admin = signed_in(app, add_person(app, "admin@example.com", Role.ADMIN.value))
    token = csrf_of(admin.get("/people/").text)
    for bad in ("", "nope", "\x00@x.com", "a" * 5000, "admin@example.com"):
        for path in ("/people/", "/people/erase"):
            response = admin.post(path, data={"csrf_token": token, "email": bad})
            assert response.status_code in (409, 422), (path, bad)
            assert 'aria-invalid="true"' in response.text


def test_the_outbox_copies_go_too(app, admin_id, tmp_path):
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    (outbox / "1-a.eml").write_text(f"To: {JANE.upper()}\nSubject: NPS\n\nHi")
    (outbox / "2-b.eml").write_text("To: other@example.com\nSubject: NPS\n\nHi")
    app.config["OUTBOX_DIR"] = str(outbox)
    response = app.test_client().delete(
        f"/api/v1/people/{JANE}", headers=bearer(token_for(app, admin_id, "write"))
    )
    assert response.json["outbox_messages"] == 1
    assert [p.name for p in outbox.iterdir()] == ["2-b.eml"]


def test_a_connector_without_erase_leaves_everything():
    traces = [TicketTraces("t-1", ("scoreNum",), ("n-1",))]
    assert Helpdesk({}, {}).erase(traces) == traces


def test_migration_hashes_existing_suppressions(tmp_path, database_url):
    app = create_app(make_config(tmp_path, database_url))
    with app.app_context():
        upgrade(revision="0009")
        with db.engine.begin() as conn:
            for n, email in enumerate(("Jane.Doe@Example.COM", "jane.doe@example.com", "x@y.z")):
                conn.exec_driver_sql(
                    "INSERT INTO suppressions (id, email, reason, created_at) VALUES "
                    f"({n + 1}, '{email}', 'unsubscribed', '2026-11-01 10:00:00+00')"
                )
        upgrade()
        assert is_suppressed(JANE) and is_suppressed("X@y.z")
        assert not is_suppressed("other@example.com")
        assert db.session.execute(select(func.count(Suppression.id))).scalar_one() == 2
    assert places_holding(app, JANE) == set()


def test_rotating_the_secret_key_keeps_the_suppression_list(app, tmp_path):
    with app.app_context():
        suppress(JANE, "unsubscribed")
    new_key = "a-brand-new-secret-key-0123456789"
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    during = create_app(
        make_config(tmp_path, url, SECRET_KEY=new_key, HUB_OLD_SECRET_KEYS=[TEST_SECRET])
    )
    result = during.test_cli_runner().invoke(cli, ["rotate-secrets"])
    assert result.exit_code == 0, result.output
    after = create_app(make_config(tmp_path, url, SECRET_KEY=new_key))
    with after.app_context():
        assert is_suppressed(JANE) and not is_suppressed("other@example.com")
        db.engine.dispose()
    with during.app_context():
        db.engine.dispose()


# -- against the Kustomer sandbox, through the real pipeline ---------------------------


def jane_conversation(hub) -> str:  # noqa: F811
    return next(c for c, a in hub.sandbox.seeded.addresses.items() if a == JANE)


def rate_and_write_back(hub, conversation: str) -> None:  # noqa: F811
    with hub.app.app_context():
        scan_survey(hub.survey_id)
        delivery = db.session.execute(
            select(Delivery).where(Delivery.ticket_id == conversation)
        ).scalar_one()
        assert delivery.requester_email == JANE
        send_delivery(delivery.id)
    with hub.app.test_request_context():
        token = rating_token(delivery.id)
    client = hub.app.test_client()
    client.post(f"/r/{token}/3")
    client.post(f"/r/{token}/comment", data={"comment": "Slow"})
    with hub.app.app_context():
        for write_back in db.session.execute(select(WriteBack)).scalars().all():
            assert run_write_back(write_back.id) == "done"


def test_the_helpdesk_is_cleaned_and_a_new_ticket_is_skipped_as_unsubscribed(hub):  # noqa: F811
    conversation = jane_conversation(hub)
    rate_and_write_back(hub, conversation)
    state = hub.sandbox.state()
    assert state["custom"][conversation] == {"surveyhubNpsScoreNum": 3}
    [note] = state["notes"][conversation]
    with hub.app.app_context():
        erasure = erase_person("Jane.Doe@Example.com")
        assert run_helpdesk_erasure(erasure.audit_entry_id) == "done"
        entry = db.session.get(AuditEntry, erasure.audit_entry_id)
        # The attribute is cleared; Kustomer's documented API cannot delete a note, so
        # the entry names it (by ids only) for an admin to delete by hand.
        assert conversation not in hub.sandbox.state()["custom"]
        [left] = entry.details["helpdesk"]["left"]
        assert left["ticket"] == conversation and len(left["notes"]) == 1
        assert JANE not in json.dumps(entry.details)
        assert db.session.execute(select(HelpdeskErasure)).first() is None
    assert len(hub.sandbox.state()["notes"][conversation]) == 1
    assert places_holding(hub.app, JANE) == set()

    customer = hub.sandbox.org.conversations[conversation]["customer_id"]
    agent = hub.sandbox.org.conversations[conversation]["attributes"]["assignedUsers"][0]
    from datetime import timedelta

    new = hub.sandbox.org.add_conversation(
        customer,
        assignee=agent,
        updated_ago=timedelta(hours=49),
        resolved_ago=timedelta(hours=49, minutes=1),
    )
    with hub.app.app_context():
        db.session.execute(update(Survey).values(watermark=utcnow() - timedelta(days=30)))
        db.session.commit()
        decided = {}
        scan_survey(hub.survey_id, on_decision=lambda t, r: decided.update({t.id: r}))
        row = db.session.execute(select(Delivery).where(Delivery.ticket_id == new)).scalar_one()
    assert decided[new] == "unsubscribed"
    assert (row.state, row.skip_reason, row.requester_email) == ("skipped", "unsubscribed", None)
    assert places_holding(hub.app, JANE) == set()


def test_a_helpdesk_outage_is_retried_until_it_is_over(hub, redis_client, monkeypatch):  # noqa: F811
    conversation = jane_conversation(hub)
    rate_and_write_back(hub, conversation)

    def down(self, traces):
        raise Unavailable("Kustomer answered 503: down for maintenance")

    with hub.app.app_context():
        monkeypatch.setattr(Kustomer, "erase", down)
        erasure = erase_person(JANE)
        assert run_helpdesk_erasure(erasure.audit_entry_id) == "pending"
        [task] = db.session.execute(select(HelpdeskErasure)).scalars().all()
        assert task.attempts == 1 and "503" in task.last_error
        assert task.next_attempt_at > utcnow()
        monkeypatch.undo()
        redis_client.flushdb()
        assert reconcile()["erasures"] == 0  # not due yet
        task.next_attempt_at = utcnow()
        db.session.commit()
        assert reconcile()["erasures"] == 1
        [job] = Queue(WRITE_BACKS, connection=redis_connection()).get_jobs()
        assert job.args == (erasure.audit_entry_id,)
        assert run_helpdesk_erasure(erasure.audit_entry_id) == "done"
    assert conversation not in hub.sandbox.state()["custom"]


def test_the_sandbox_clears_an_attribute_with_null_only(sandbox):  # noqa: F811
    kustomer = sandbox.connector()
    conversation = sandbox.seeded.eligible[0]
    client = kustomer.client
    client.request(
        "PATCH", f"/conversations/{conversation}", need="conversation.update",
        json={"custom": {"surveyhubNpsScoreNum": 9, "orderNumberStr": "4417"}},
    )  # fmt: skip
    left = kustomer.erase([TicketTraces(conversation, ("surveyhubNpsScoreNum",), ("n1",))])
    assert left == [TicketTraces(conversation, (), ("n1",))]
    assert sandbox.state()["custom"][conversation] == {"orderNumberStr": "4417"}
    assert kustomer.erase([TicketTraces("5f00000000000000000000ff", ("xNum",))]) == []
    refused = client.session.patch(
        f"{kustomer.base_url}/conversations/{conversation}", json={"custom": ["x"]}
    )
    assert refused.status_code == 400
