"""The deliveries log and the coverage funnel: filters, keyset pages, counts that agree,
a bounded number of queries over 100,000 rows, retrying a write-back, and who sees what."""

from __future__ import annotations

import contextlib
import html
import re
from datetime import UTC
from datetime import datetime
from datetime import timedelta

import pytest
from sqlalchemy import event
from sqlalchemy import func
from sqlalchemy import insert
from sqlalchemy import select

from hub.extensions import db
from hub.funnel import STAGES
from hub.funnel import DayRange
from hub.funnel import count_funnel
from hub.jobs import WRITE_BACKS
from hub.jobs import get_queue
from hub.models import Delivery
from hub.models import Rating
from hub.models import Role
from hub.models import Survey
from hub.models import WriteBack
from hub.models import utcnow
from hub.pipeline.decide import COOLDOWN
from hub.pipeline.decide import NO_EMAIL
from hub.pipeline.decide import UPDATED
from hub.pipeline.decide import WRONG_CHANNEL
from tests.conftest import acme_connection
from tests.web.conftest import add_person
from tests.web.conftest import csrf_of
from tests.web.conftest import signed_in

NOW = utcnow().replace(microsecond=0)
TODAY = NOW.date()


def add_survey(name: str = "Support NPS", metric: str = "nps", scale: int = 11) -> int:
    """A survey on the Acme connection (needs an app context)."""
    connection = acme_connection()
    survey = Survey(connection=connection, metric=metric, scale=scale, name=name, settings={})
    db.session.add(survey)
    db.session.commit()
    return survey.id


def add(survey_id: int, ticket: str, state: str = "sent", **fields) -> Delivery:
    """One delivery; `rating=(value, comment)` adds its rating (on `scale`, default 11),
    `write_back=(state, error)` the rating's write-back."""
    rating = fields.pop("rating", None)
    scale = fields.pop("scale", 11)
    write_back = fields.pop("write_back", None)
    fields.setdefault("agent_ref", "agent-7")
    fields.setdefault("requester_email", f"{ticket}@example.com")
    fields.setdefault("created_at", NOW - timedelta(days=1))
    if state == "sent":
        fields.setdefault("sent_at", fields["created_at"] + timedelta(hours=1))
    delivery = Delivery(survey_id=survey_id, ticket_id=ticket, state=state, **fields)
    db.session.add(delivery)
    db.session.flush()
    if rating is not None:
        value, comment = rating
        row = Rating(
            delivery_id=delivery.id,
            survey_id=survey_id,
            agent_ref=delivery.agent_ref,
            value=value,
            scale=scale,
            comment=comment,
        )
        db.session.add(row)
        db.session.flush()
        if write_back is not None:
            wb_state, error = write_back
            db.session.add(WriteBack(rating_id=row.id, state=wb_state, last_error=error))
    db.session.commit()
    return delivery


def build_mix(app) -> dict:
    """A survey with tickets at every step of the funnel, another survey, and tickets
    outside the last 30 days."""
    with app.app_context():
        survey = add_survey()
        other = add_survey("Chat CSAT", metric="csat", scale=3)
        opened = NOW - timedelta(hours=20)
        for n in range(3):
            add(survey, f"cool-{n}", "skipped", skip_reason=COOLDOWN)
        add(survey, "noemail-1", "skipped", skip_reason=NO_EMAIL, requester_email=None)
        add(survey, "noemail-2", "skipped", skip_reason=NO_EMAIL, requester_email=None)
        add(survey, "chan-1", "skipped", skip_reason=WRONG_CHANNEL, agent_ref="agent-9")
        add(survey, "upd-1", "skipped", skip_reason=UPDATED)
        add(survey, "pend-1", "pending")
        add(survey, "pend-2", "pending", agent_ref="agent-9")
        add(survey, "unk-1", "unknown", error="Connection lost after DATA")
        add(survey, "fail-1", "failed", error="550 Mailbox unavailable")
        add(survey, "canc-1", "cancelled", error="The survey was deactivated.")
        for n in range(3):
            add(survey, f"sent-{n}", agent_ref="agent-9" if n == 0 else "agent-7")
        add(survey, "open-1", opened_at=opened)
        add(survey, "open-2", opened_at=opened, agent_ref="agent-9")
        add(survey, "rate-1", opened_at=opened, rating=(9, ""), write_back=("done", ""))
        add(
            survey,
            "rate-2",
            opened_at=opened,
            rating=(3, ""),
            write_back=("failed", "Kustomer answered 404: conversation not found"),
        )
        add(
            survey,
            "comm-1",
            opened_at=opened,
            rating=(10, "Fast and friendly"),
            write_back=("pending", ""),
            agent_ref="agent-9",
        )
        # Rated before the hub kept opening times: still counts as opened.
        add(survey, "comm-2", rating=(7, "Took a while " * 30), write_back=("done", ""))
        add(survey, "old-1", created_at=NOW - timedelta(days=40))
        add(survey, "old-2", "skipped", skip_reason=COOLDOWN, created_at=NOW - timedelta(days=45))
        add(other, "csat-1", rating=(3, "Great"), scale=3, opened_at=opened)
        add(other, "csat-2", "skipped", skip_reason=NO_EMAIL)
    return {"survey": survey, "other": other}


#: What the funnel of the mix's survey shows over the last 30 days.
EXPECTED = {
    "seen": 21,
    "eligible": 14,
    "sent": 9,
    "opened": 6,
    "rated": 4,
    "commented": 2,
}


def tickets_of(page: str) -> list[str]:
    """The ticket ids a log page lists, in order."""
    return re.findall(r'<th scope="row"[^>]*><strong>([^<]+)</strong>', page)


def older_link(page: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" rel="next">', page)
    return html.unescape(found.group(1)) if found else None


def newer_link(page: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" rel="prev">', page)
    return html.unescape(found.group(1)) if found else None


def shown_total(page: str) -> int:
    found = re.search(r"<strong>([\d,]+)</strong> (?:delivery matches|deliveries match)", page)
    return int(found.group(1).replace(",", ""))


def every_ticket(client, url: str) -> list[str]:
    """All tickets a filtered log lists, following "Older" to the last page."""
    listed = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.text
        listed += tickets_of(response.text)
        url = older_link(response.text)
    return listed


def funnel_links(page: str) -> list[tuple[str, int]]:
    """Every count on the funnel page that links to the log, with its number."""
    return [
        (html.unescape(href), int(number.replace(",", "")))
        for href, number in re.findall(
            r'<a href="(/deliveries\?[^"]+)" aria-label="[^"]*">([\d,]+)</a>', page
        )
    ]


def test_the_funnel_counts_every_stage_reason_and_state(app, admin):
    ids = build_mix(app)
    with app.app_context():
        funnel = count_funnel(ids["survey"], DayRange.last_days(30, TODAY))
    assert funnel.stages == EXPECTED
    assert {r: n for r, n in funnel.skipped.items() if n} == {
        COOLDOWN: 3,
        NO_EMAIL: 2,
        WRONG_CHANNEL: 1,
        UPDATED: 1,
    }
    assert list(funnel.skipped)[0] == COOLDOWN  # the biggest reason first
    assert funnel.not_sent == {
        "pending": 2,
        "sending": 0,
        "unknown": 1,
        "failed": 1,
        "cancelled": 1,
    }
    assert funnel.seen == funnel.stages["eligible"] + sum(funnel.skipped.values())
    assert funnel.stages["eligible"] == funnel.stages["sent"] + sum(funnel.not_sent.values())


def test_every_funnel_count_links_to_exactly_that_many_rows(app, admin):
    ids = build_mix(app)
    page = admin.get(f"/surveys/{ids['survey']}/funnel")
    assert page.status_code == 200
    links = funnel_links(page.text)
    # Six stages, four reasons with tickets, five not-sent states.
    assert len(links) == 15
    assert [n for _, n in links[:6]] == [EXPECTED[stage] for stage in STAGES]
    start = (TODAY - timedelta(days=29)).isoformat()
    for url, count in links:
        assert f"from={start}" in url and f"to={TODAY.isoformat()}" in url
        listed = every_ticket(admin, url)
        assert len(listed) == count, url
        assert len(set(listed)) == count
        if count:
            assert shown_total(admin.get(url).text) == count


def test_funnel_range_and_its_default_of_thirty_days(app, admin):
    ids = build_mix(app)
    default = admin.get(f"/surveys/{ids['survey']}/funnel").text
    assert funnel_links(default)[0][1] == 21
    wide = admin.get(
        f"/surveys/{ids['survey']}/funnel?from={(TODAY - timedelta(days=60)).isoformat()}"
    ).text
    assert funnel_links(wide)[0][1] == 23
    old = (TODAY - timedelta(days=40)).isoformat()
    assert (
        funnel_links(admin.get(f"/surveys/{ids['survey']}/funnel?from={old}&to={old}").text)[0][1]
        == 1
    )


def test_funnel_page_draws_an_accessible_chart_and_explains_stages(app, admin):
    ids = build_mix(app)
    page = admin.get(f"/surveys/{ids['survey']}/funnel").text
    assert 'role="img"' in page and "<title id=" in page and "<desc id=" in page
    assert "Eligible: 14 (67% of seen)." in page
    assert "Passed every rule; skipped tickets are listed below with their reason" in page
    assert "The requester was surveyed recently (cooldown)." in page
    assert "No ticket was skipped for:" in page


def test_funnel_with_no_tickets_says_what_to_do(app, admin):
    with app.app_context():
        survey = add_survey()
    page = admin.get(f"/surveys/{survey}/funnel")
    assert page.status_code == 200
    assert "The hub saw no resolved ticket for this survey" in page.text
    assert "Activate the survey" in page.text


@pytest.mark.parametrize(
    "query",
    ["from=yesterday", "to=2025-02-30", "from=2025-03-02&to=2025-03-01"],
)
def test_funnel_explains_a_bad_range(app, admin, query):
    with app.app_context():
        survey = add_survey()
    page = admin.get(f"/surveys/{survey}/funnel?{query}")
    assert page.status_code == 400
    assert "must be" in page.text


def test_funnel_of_a_missing_survey_is_404(admin):
    assert admin.get("/surveys/999/funnel").status_code == 404


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("state=failed", {"fail-1"}),
        ("state=skipped&reason=no+email", {"noemail-1", "noemail-2", "csat-2"}),
        ("reason=cooldown", {"cool-0", "cool-1", "cool-2", "old-2"}),
        ("agent=agent-9", {"chan-1", "pend-2", "sent-0", "open-2", "comm-1"}),
        ("stage=commented", {"comm-1", "comm-2", "csat-1"}),
        ("stage=rated&agent=agent-7", {"rate-1", "rate-2", "comm-2", "csat-1"}),
        ("writeback=failed", {"rate-2"}),
        ("writeback=done", {"rate-1", "comm-2"}),
        ("stage=opened&writeback=pending", {"comm-1"}),
        ("survey={other}", {"csat-1", "csat-2"}),
        ("survey={other}&stage=rated", {"csat-1"}),
        ("to={old}", {"old-1", "old-2"}),
        ("from={old}&to={old}", {"old-1"}),
        ("state=sent&from={today}", set()),
    ],
)
def test_log_filters(app, admin, query, expected):
    ids = build_mix(app)
    query = query.format(
        other=ids["other"],
        old=(TODAY - timedelta(days=40)).isoformat(),
        today=(TODAY + timedelta(days=1)).isoformat(),
    )
    assert set(every_ticket(admin, f"/deliveries?{query}")) == expected


def test_log_rows_show_state_reason_times_rating_and_write_back(app, admin):
    build_mix(app)
    with app.app_context():
        add_person(app, "sam@example.com", helpdesk_user_id="agent-9")
    page = admin.get("/deliveries").text
    assert shown_total(page) == 25
    assert "The requester was surveyed recently (cooldown)." in page
    assert "550 Mailbox unavailable" in page
    assert "<strong>9/10</strong> promoter" in page
    assert "<strong>3/10</strong> detractor" in page
    assert "“Fast and friendly”" in page
    assert "Took a while Took a while" in page and "…”" in page  # long comments cut
    assert "Kustomer answered 404: conversation not found" in page
    assert page.count(">Retry</button>") == 1
    assert ">Sam</a>" in page  # the agent's name, not the helpdesk id
    assert "Seen <time" in page and "Opened <time" in page


def test_keyset_pages_list_every_row_once_newest_first(app, admin):
    with app.app_context():
        survey = add_survey()
        for n in range(123):
            add(survey, f"t-{n:03}")
    first = admin.get("/deliveries")
    assert first.status_code == 200
    assert shown_total(first.text) == 123
    assert newer_link(first.text) is None
    pages, url = [], "/deliveries"
    last_page = None
    while url:
        response = admin.get(url)
        pages.append(tickets_of(response.text))
        last_page = response.text
        url = older_link(response.text)
    assert [len(p) for p in pages] == [50, 50, 23]
    walked = [ticket for page in pages for ticket in page]
    assert walked == [f"t-{n:03}" for n in reversed(range(123))]
    # And back, newest first on each page, to the first page.
    back, url = [], newer_link(last_page)
    while url:
        response = admin.get(url)
        back.insert(0, tickets_of(response.text))
        url = newer_link(response.text)
    assert back == pages[:-1]


def test_pages_keep_the_filters(app, admin):
    with app.app_context():
        survey = add_survey()
        for n in range(120):
            add(survey, f"s-{n}", "skipped" if n % 2 else "sent", skip_reason=COOLDOWN)
    page = admin.get("/deliveries?state=sent").text
    assert "state=sent" in older_link(page)
    assert len(every_ticket(admin, "/deliveries?state=sent")) == 60


@pytest.mark.parametrize(
    "query",
    [
        "state=lost",
        "reason=bored",
        "stage=loved",
        "writeback=maybe",
        "survey=abc",
        "survey=999",
        "from=2025-13-01",
        "to=tomorrow",
        "from=2025-03-02&to=2025-03-01",
        "before=abc",
        "after=-5",
    ],
)
def test_invalid_filters_get_a_clear_message(app, admin, query):
    response = admin.get(f"/deliveries?{query}")
    assert response.status_code == 400
    assert "not valid, so nothing is listed" in response.text
    assert 'role="alert"' in response.text


def test_empty_log_says_what_to_do_next(admin, agent):
    assert "activate the trigger" in admin.get("/deliveries").text
    assert "No ticket of yours has been surveyed yet" in agent.get("/deliveries").text


def test_empty_filter_result_says_so(app, admin):
    build_mix(app)
    assert "No deliveries match these filters" in admin.get("/deliveries?agent=nobody").text


def test_agents_see_only_their_own_rows(app, agent):
    ids = build_mix(app)
    survey = ids["survey"]
    for query in ("", "?agent=agent-9", "?agent=", f"?survey={survey}&agent=agent-9&stage=seen"):
        page = agent.get(f"/deliveries{query}")
        assert page.status_code == 200
        listed = every_ticket(agent, f"/deliveries{query}")
        assert listed and all(t not in listed for t in ("chan-1", "pend-2", "comm-1", "sent-0"))
        assert "comm-1@example.com" not in page.text
        assert "sent-0@example.com" not in page.text
    page = agent.get("/deliveries").text
    assert "rate-2@example.com" in page
    assert ">Retry</button>" not in page
    assert 'name="agent"' not in page


def test_an_agent_without_a_helpdesk_id_sees_no_rows(app):
    build_mix(app)
    client = signed_in(app, add_person(app, "new@example.com"))
    page = client.get("/deliveries?agent=agent-7")
    assert page.status_code == 200
    assert tickets_of(page.text) == []
    assert shown_total(page.text) == 0


def test_agents_may_not_open_the_funnel_or_retry(app, agent):
    ids = build_mix(app)
    assert agent.get(f"/surveys/{ids['survey']}/funnel").status_code == 403
    with app.app_context():
        failed = db.session.execute(select(WriteBack.id).where(WriteBack.state == "failed"))
        write_back = failed.scalar_one()
    token = csrf_of(agent.get("/deliveries").text)
    response = agent.post(f"/write-backs/{write_back}/retry", data={"csrf_token": token})
    assert response.status_code == 403


def test_signed_out_visitors_are_sent_to_sign_in(app, client):
    response = client.get("/deliveries")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_retry_puts_a_failed_write_back_back_in_line(app, admin, redis_client):
    build_mix(app)
    with app.app_context():
        write_back = db.session.execute(
            select(WriteBack.id).where(WriteBack.state == "failed")
        ).scalar_one()
    page = admin.get("/deliveries?writeback=failed").text
    response = admin.post(
        f"/write-backs/{write_back}/retry",
        data={"csrf_token": csrf_of(page), "next": "/deliveries?writeback=failed"},
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/deliveries?writeback=failed"
    with app.app_context():
        assert db.session.get(WriteBack, write_back).state == "pending"
        queued = get_queue(WRITE_BACKS).jobs
        assert [job.args for job in queued] == [(write_back,)]
    after = admin.get("/deliveries?writeback=failed").text
    assert "is queued again" in after
    assert tickets_of(after) == []


def test_retry_of_a_write_back_that_is_not_failed_explains_why(app, admin, redis_client):
    build_mix(app)
    with app.app_context():
        write_back = db.session.execute(
            select(WriteBack.id).where(WriteBack.state == "done").limit(1)
        ).scalar_one()
    token = csrf_of(admin.get("/deliveries").text)
    response = admin.post(f"/write-backs/{write_back}/retry", data={"csrf_token": token})
    assert response.status_code == 303
    assert "only a failed write-back can be retried" in admin.get("/deliveries").text
    missing = admin.post("/write-backs/9999/retry", data={"csrf_token": token})
    assert missing.status_code == 404


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil"])
def test_retry_returns_only_to_a_local_page(app, admin, redis_client, target):
    build_mix(app)
    with app.app_context():
        write_back = db.session.execute(
            select(WriteBack.id).where(WriteBack.state == "failed")
        ).scalar_one()
    token = csrf_of(admin.get("/deliveries").text)
    response = admin.post(
        f"/write-backs/{write_back}/retry", data={"csrf_token": token, "next": target}
    )
    assert response.headers["Location"] == "/deliveries"


def test_retry_without_the_csrf_token_is_refused(app, admin):
    build_mix(app)
    with app.app_context():
        write_back = db.session.execute(
            select(WriteBack.id).where(WriteBack.state == "failed")
        ).scalar_one()
    assert admin.post(f"/write-backs/{write_back}/retry").status_code == 400
    with app.app_context():
        assert db.session.get(WriteBack, write_back).state == "failed"


@contextlib.contextmanager
def counting_statements(app):
    """Count the SQL statements run inside the block."""
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def bulk_deliveries(survey_id: int, first: int, count: int) -> None:
    """`count` deliveries in one multi-row insert, one minute apart, every tenth rated
    and every fiftieth rating's write-back failed (needs an app context)."""
    start = NOW - timedelta(days=20)
    states = ("sent", "sent", "sent", "skipped", "pending")
    rows = [
        {
            "survey_id": survey_id,
            "ticket_id": f"bulk-{n}",
            "requester_email": f"c{n}@example.com",
            "requester_name": "",
            "agent_ref": f"agent-{n % 9}",
            "state": states[n % len(states)],
            "skip_reason": COOLDOWN if states[n % len(states)] == "skipped" else None,
            "error": "",
            "attempts": 0,
            "created_at": start + timedelta(minutes=n % 20000),
            "updated_at": start,
            "sent_at": start if states[n % len(states)] == "sent" else None,
        }
        for n in range(first, first + count)
    ]
    db.session.execute(insert(Delivery), rows)
    db.session.commit()
    rated = db.session.execute(
        select(Delivery.id).where(Delivery.survey_id == survey_id, Delivery.state == "sent")
    ).scalars()
    ratings = [
        {
            "delivery_id": delivery_id,
            "survey_id": survey_id,
            "agent_ref": "agent-7",
            "value": delivery_id % 11,
            "scale": 11,
            "comment": "ok" if delivery_id % 3 else "",
            "suspected_scanner": False,
        }
        for delivery_id in rated
        if delivery_id % 10 == 1 and delivery_id > first
    ]
    if ratings:
        db.session.execute(insert(Rating), ratings)
        db.session.commit()
    rating_ids = db.session.execute(select(Rating.id).where(Rating.delivery_id > first)).scalars()
    write_backs = [
        {
            "rating_id": rating_id,
            "kind": "score",
            "state": "failed" if rating_id % 50 == 0 else "done",
            "attempts": 1,
            "last_error": "Kustomer answered 500" if rating_id % 50 == 0 else "",
        }
        for rating_id in rating_ids
    ]
    if write_backs:
        db.session.execute(insert(WriteBack), write_backs)
        db.session.commit()


def test_the_log_runs_a_bounded_number_of_queries_over_100000_deliveries(app):
    admin_id = add_person(app, "admin@example.com", Role.ADMIN.value)
    with app.app_context():
        survey = add_survey()
        bulk_deliveries(survey, 0, 1_000)
    client = signed_in(app, admin_id)
    since = (TODAY - timedelta(days=25)).isoformat()
    pages = {
        "first": "/deliveries",
        "filtered": f"/deliveries?survey={survey}&state=sent&stage=rated&writeback=done"
        f"&agent=agent-7&from={since}",
        "sent": f"/deliveries?survey={survey}&state=sent&from={since}",
    }

    def queries() -> dict[str, int]:
        counts = {}
        for name, url in pages.items():
            with counting_statements(app) as statements:
                page = client.get(url)
            assert page.status_code == 200 and tickets_of(page.text)
            counts[name] = len(statements)
            if name == "filtered":
                continue
            third = older_link(client.get(older_link(page.text)).text)
            with counting_statements(app) as statements:
                later = client.get(third)
            assert later.status_code == 200 and len(tickets_of(later.text)) == 50
            counts[f"{name}, third page"] = len(statements)
        return counts

    small = queries()
    with app.app_context():
        bulk_deliveries(survey, 1_000, 99_000)
        assert db.session.execute(select(func.count(Delivery.id))).scalar_one() == 100_000
    large = queries()
    assert large == small
    assert max(large.values()) <= 8
    first = client.get("/deliveries").text
    assert shown_total(first) == 100_000
    assert len(tickets_of(first)) == 50
    with counting_statements(app) as statements:
        assert client.get(f"/surveys/{survey}/funnel").status_code == 200
    assert len(statements) <= 4


def test_funnel_counts_equal_the_log_over_many_rows(app, admin):
    with app.app_context():
        survey = add_survey()
        bulk_deliveries(survey, 0, 3_000)
    page = admin.get(f"/surveys/{survey}/funnel").text
    for url, count in funnel_links(page):
        if count:
            assert shown_total(admin.get(url).text) == count, url


def test_dates_in_the_log_are_utc_days(app, admin):
    with app.app_context():
        survey = add_survey()
        add(survey, "late", created_at=datetime(2025, 3, 1, 23, 59, 59, tzinfo=UTC))
        add(survey, "early", created_at=datetime(2025, 3, 2, 0, 0, 0, tzinfo=UTC))
    assert every_ticket(admin, "/deliveries?from=2025-03-01&to=2025-03-01") == ["late"]
    assert every_ticket(admin, "/deliveries?from=2025-03-02") == ["early"]


def test_shares_never_round_to_none_or_all():
    from hub.web.deliveries import _percent

    assert [_percent(v) for v in (None, 0, 0.04, 4.44, 66.7, 99.6, 100)] == [
        "–",
        "0%",
        "<0.1%",
        "4.4%",
        "67%",
        ">99%",
        "100%",
    ]
