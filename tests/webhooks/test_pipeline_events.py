"""The pipeline emits delivery.sent and writeback.failed (against the Kustomer sandbox)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy import update

from hub.extensions import db
from hub.models import Delivery
from hub.models import WriteBack
from hub.pipeline.scan import scan_survey
from hub.pipeline.writeback import run_write_back
from hub.ratings import record_score
from tests.pipeline.conftest import hub  # noqa: F401  (a fixture)
from tests.pipeline.conftest import sandbox  # noqa: F401  (a fixture)
from tests.pipeline.test_pipeline import deliveries
from tests.pipeline.test_pipeline import send_pending
from tests.webhooks.conftest import send_all
from tests.webhooks.conftest import subscribe


def test_sent_surveys_and_failed_write_backs_are_events(hub, receiver):  # noqa: F811
    app = hub.app
    subscribe(app, receiver.url, events=["delivery.sent", "writeback.failed"])
    with app.app_context():
        scan_survey(hub.survey_id)
    send_pending(app, hub.survey_id)
    sent = [row for row in deliveries(app, hub.survey_id).values() if row.state == "sent"]
    assert sent
    send_all(app)
    got = [request.json for request in receiver.requests]
    assert {body["type"] for body in got} == {"delivery.sent"}
    assert sorted(body["data"]["ticket"]["id"] for body in got) == sorted(
        row.ticket_id for row in sent
    )
    assert all(body["data"]["delivery"]["sent_at"] for body in got)

    receiver.requests.clear()
    with app.app_context():
        # The ticket is gone from the helpdesk: the write-back fails for good.
        db.session.execute(
            update(Delivery).where(Delivery.id == sent[0].id).values(ticket_id="deleted-ticket")
        )
        db.session.commit()
        record_score(db.session.get(Delivery, sent[0].id), 4, 11)
        (write_back,) = db.session.execute(select(WriteBack)).scalars().all()
        assert run_write_back(write_back.id) == "failed"
    send_all(app)
    (failed,) = [request.json for request in receiver.requests]
    assert failed["type"] == "writeback.failed"
    assert failed["data"]["rating"]["value"] == 4
    assert failed["data"]["write_back"]["id"] == write_back.id
    assert failed["data"]["write_back"]["error"]
