"""Reports: numbers equal the metric plugin's formulas, date ranges, a bounded number of
queries over 100,000 ratings, the CSV export, and who may see what."""

from __future__ import annotations

import csv
import io
import itertools
import re
import time
from datetime import UTC
from datetime import date
from datetime import datetime
from datetime import timedelta

import pytest
from sqlalchemy import event
from sqlalchemy import text

from hub.exports import csv_cell
from hub.extensions import db
from hub.models import Delivery
from hub.models import Rating
from hub.models import Role
from hub.models import Survey
from hub.models import utcnow
from hub.reports import Period
from hub.reports import Scope
from hub.reports import build_report
from hub.reports import expand
from hub.web.reports import report_margin
from hub.web.reports import report_score
from tests.conftest import acme_connection
from tests.web.conftest import add_person
from tests.web.conftest import signed_in

TICKETS = itertools.count(1)


def metric_of(app, key):
    return app.extensions["hub"].registry.metrics[key]


def make_survey(app, metric="nps", scale=11, name=None, connection_id=None) -> int:
    with app.app_context():
        if connection_id is None:
            connection_id = acme_connection().id
        survey = Survey(
            connection_id=connection_id,
            metric=metric,
            scale=scale,
            name=name or f"{metric.upper()} {scale}",
            settings={},
        )
        db.session.add(survey)
        db.session.commit()
        return survey.id


def add_rating(
    app,
    survey_id,
    value,
    scale=None,
    agent="agent-7",
    when=None,
    comment="",
    scanner=False,
    email="jane@example.com",
    sent_at=None,
) -> int:
    """One sent delivery of `survey_id` and its rating."""
    with app.app_context():
        survey = db.session.get(Survey, survey_id)
        when = when or utcnow()
        delivery = Delivery(
            survey_id=survey_id,
            ticket_id=f"conv-{next(TICKETS)}",
            requester_email=email,
            agent_ref=agent,
            state="sent",
            sent_at=sent_at or when - timedelta(minutes=5),
        )
        db.session.add(delivery)
        db.session.flush()
        rating = Rating(
            delivery_id=delivery.id,
            survey_id=survey_id,
            agent_ref=agent,
            value=value,
            scale=scale or survey.scale,
            comment=comment,
            commented_at=when if comment else None,
            created_at=when,
            suspected_scanner=scanner,
        )
        db.session.add(rating)
        db.session.commit()
        return rating.id


def add_sent(app, survey_id, agent="agent-7", sent_at=None):
    """A sent delivery nobody answered."""
    with app.app_context():
        db.session.add(
            Delivery(
                survey_id=survey_id,
                ticket_id=f"conv-{next(TICKETS)}",
                requester_email="nobody@example.com",
                agent_ref=agent,
                state="sent",
                sent_at=sent_at or utcnow(),
            )
        )
        db.session.commit()


def report_of(app, key, survey_id=None, agent=None, period=None, scales=()):
    with app.app_context():
        metric = metric_of(app, key)
        return build_report(
            metric,
            Scope(key, survey_id=survey_id, agent_ref=agent),
            period or Period(),
            scales,
        )


def plain(html: str) -> str:
    """The page's text with tags gone and spaces collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


# -- numbers equal the metric's formulas --------------------------------------------

CASES = [
    # docs/metrics.md's worked examples
    ("nps", 11, [10, 9, 9, 8, 7, 6, 3, 10, 0, 5], "0", "±55.4"),
    ("csat", 5, [5, 4, 3, 2, 1, 5, 4, 4], "62.5%", "±27.9"),
    ("ces", 7, [7, 6, 5, 4, 1], "4.6", "±2.86"),
    ("csat", 3, [3, 3, 2, 1], "50%", "±35"),
    # single answers: a score, no margin
    ("nps", 11, [10], "+100", "—"),
    ("nps", 11, [3], "−100", "—"),
    ("csat", 3, [2], "0%", "—"),
    ("csat", 5, [4], "100%", "—"),
    ("ces", 7, [6], "6", "—"),
]


@pytest.mark.parametrize(("key", "scale", "values", "shown", "margin"), CASES)
def test_report_numbers_equal_the_metric_formula(app, admin, key, scale, values, shown, margin):
    survey_id = make_survey(app, key, scale)
    for value in values:
        add_rating(app, survey_id, value, comment="")
    expected = metric_of(app, key).score(sorted(values), scale)

    report = report_of(app, key, survey_id=survey_id, scales=[scale])
    (part,) = report.parts
    assert part.score.n == expected.n == len(values)
    assert part.score.value == pytest.approx(expected.value)
    assert part.score.margin == pytest.approx(expected.margin)
    assert part.score.groups == expected.groups
    assert part.score.formula == expected.formula
    assert part.score.extra == pytest.approx(expected.extra)
    assert report_score(expected.value, expected.unit) == shown
    assert report_margin(expected.margin, expected.unit) == margin

    page = plain(admin.get(f"/surveys/{survey_id}/report").get_data(as_text=True))
    assert f"{key.upper()} score {shown}" in page
    assert f"{margin} {'points ' if margin != '—' and key != 'ces' else ''}95% margin" in page
    assert f"n = {len(values)} answer{'s' if len(values) != 1 else ''} " in page
    assert expected.formula in page
    # The metric report of all surveys shows the same numbers here (only one survey).
    page = plain(admin.get(f"/metrics/{key}/report").get_data(as_text=True))
    assert f"{key.upper()} score {shown}" in page


def test_ces_shows_its_percent_positive_with_a_margin(app, admin):
    survey_id = make_survey(app, "ces", 7)
    for value in [7, 6, 5, 4, 1]:
        add_rating(app, survey_id, value)
    page = plain(admin.get(f"/surveys/{survey_id}/report").get_data(as_text=True))
    assert "% positive 60% ±32.6 points 95% margin" in page


@pytest.mark.parametrize(("key", "scale"), [("nps", 11), ("csat", 3), ("csat", 5), ("ces", 7)])
def test_an_empty_range_scores_nothing_and_says_what_to_do(app, admin, key, scale):
    survey_id = make_survey(app, key, scale)
    add_rating(app, survey_id, scale // 2 + 1, when=utcnow() - timedelta(days=100))
    add_sent(app, survey_id)

    period = Period.last_days(30, utcnow().date())
    report = report_of(app, key, survey_id=survey_id, period=period, scales=[scale])
    (part,) = report.parts
    assert part.score == metric_of(app, key).score([], scale)
    assert part.score.value is None and part.score.n == 0
    assert part.trend == () and part.agents == ()
    assert report.response.sent == 1 and report.response.rated == 0

    html = admin.get(f"/surveys/{survey_id}/report").get_data(as_text=True)
    assert "No ratings in this range yet" in html
    assert "1 survey email went out in this range" in plain(html)
    assert "from=&amp;to=" in html  # the all-time link


def test_trend_distribution_and_agents_equal_the_formula_per_bucket(app, admin):
    survey_id = make_survey(app, "nps", 11)
    add_person(app, "priya@example.com", helpdesk_user_id="agent-8")
    today = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)
    days = {
        0: [("agent-7", 10), ("agent-7", 9), ("agent-8", 3)],
        1: [("agent-8", 8)],
        3: [("agent-7", 0), ("agent-8", 10), ("agent-8", 9), ("agent-9", 6)],
    }
    for ago, answers in days.items():
        for agent, value in answers:
            add_rating(app, survey_id, value, agent=agent, when=today - timedelta(days=ago))
    metric = metric_of(app, "nps")
    period = Period(today.date() - timedelta(days=6), today.date())

    (part,) = report_of(app, "nps", survey_id=survey_id, period=period).parts
    assert [bucket.start for bucket in part.trend] == [
        today.date() - timedelta(days=ago) for ago in range(6, -1, -1)
    ]
    for bucket in part.trend:
        values = sorted(v for _, v in days.get((today.date() - bucket.start).days, []))
        assert bucket.score == metric.score(values, 11)
    everything = [v for answers in days.values() for _, v in answers]
    counts = {item.value: item.count for g in part.distribution for item in g.values}
    assert counts == {v: everything.count(v) for v in range(11)}
    assert [g.name for g in part.distribution] == ["detractor", "passive", "promoter"]
    by_agent = {row.ref: row for row in part.agents}
    for ref in ("agent-7", "agent-8", "agent-9"):
        values = sorted(v for answers in days.values() for a, v in answers if a == ref)
        assert by_agent[ref].score == metric.score(values, 11)
    assert [row.ref for row in part.agents] == ["agent-8", "agent-7", "agent-9"]  # by n
    assert by_agent["agent-8"].name == "Priya" and by_agent["agent-9"].name == "agent-9"

    html = admin.get(f"/surveys/{survey_id}/report?from={period.start}&to={period.end}").get_data(
        as_text=True
    )
    page = plain(html)
    assert "Priya agent-8 +25 ±" in page  # 2 promoters, 1 passive, 1 detractor of 4
    assert "Promoters 9–10 · 50% (4)" in page
    assert html.count("<svg") == 2 and html.count("Show the numbers") == 2
    assert 'role="img" aria-labelledby="survey-trend-11-title survey-trend-11-desc"' in html


def test_weeks_and_months_for_longer_ranges(app):
    survey_id = make_survey(app, "csat", 3)
    start = datetime(2025, 1, 1, 12, tzinfo=UTC)
    for days in (0, 5, 40, 90):
        add_rating(app, survey_id, 3, when=start + timedelta(days=days))
    metric = metric_of(app, "csat")
    scope = Scope("csat", survey_id=survey_id)
    with app.app_context():
        weekly = build_report(metric, scope, Period(start.date(), date(2025, 4, 30)))
        monthly = build_report(
            metric, scope, Period(None, date(2099, 1, 1)), today=date(2027, 6, 1)
        )
    assert weekly.granularity == "week"
    buckets = weekly.parts[0].trend
    assert buckets[0].start == start.date()  # clipped to the range: Wednesday
    assert all(b.start.weekday() == 0 for b in buckets[1:])
    assert sum(b.score.n for b in buckets) == 4
    assert monthly.granularity == "month"
    trend = monthly.parts[0].trend
    assert trend[0].start == start.date()  # an open start begins at the first answer
    assert trend[-1].end == date(2027, 6, 1)  # and a far end stops at today
    assert [b.score.n for b in trend[:4]] == [2, 1, 0, 1]


def test_mixed_csat_scales_get_one_score_each_never_rescaled(app, admin):
    smileys = make_survey(app, "csat", 3, name="Smileys")
    stars = make_survey(app, "csat", 5, name="Stars")
    for value in (3, 3, 1):
        add_rating(app, smileys, value)
    for value in (5, 4, 3, 2):
        add_rating(app, stars, value)
    metric = metric_of(app, "csat")

    report = report_of(app, "csat", scales=[3, 5])
    assert [p.scale for p in report.parts] == [3, 5]
    assert report.parts[0].score == metric.score([1, 3, 3], 3)
    assert report.parts[1].score == metric.score([2, 3, 4, 5], 5)

    page = plain(admin.get("/metrics/csat/report").get_data(as_text=True))
    assert "CSAT score, 3-point scale 66.7%" in page
    assert "CSAT score, 5-point scale 50%" in page
    assert "answers are never rescaled" in page
    assert "Smileys 3 points inactive 66.7%" in page


def test_response_rate_is_rated_of_sent_in_the_range(app, admin):
    survey_id = make_survey(app, "nps", 11)
    now = utcnow()
    add_rating(app, survey_id, 9)
    add_rating(app, survey_id, 9, scanner=True)  # a scanner's click answers nothing
    add_sent(app, survey_id)
    add_sent(app, survey_id)
    add_sent(app, survey_id, sent_at=now - timedelta(days=60))  # outside the range
    # Sent long ago, rated today: the rating counts; the email is not in the range.
    add_rating(app, survey_id, 10, sent_at=now - timedelta(days=45))

    report = report_of(app, "nps", survey_id=survey_id, period=Period.last_days(30, now.date()))
    assert (report.response.sent, report.response.rated) == (4, 1)
    assert report.response.rate == 25.0
    assert report.scanner_clicks == 1
    assert report.parts[0].score.n == 2  # the scanner's click is left out
    page = plain(admin.get(f"/surveys/{survey_id}/report").get_data(as_text=True))
    assert "Response rate 25% 1 rated of 4 sent" in page
    assert "1 rating that looks like a mail security scanner's click is left out" in page


# -- date range -----------------------------------------------------------------------


def test_date_filter_includes_whole_utc_days_and_nothing_else(app, admin):
    survey_id = make_survey(app, "nps", 11)
    day = date(2026, 3, 10)
    midnight = datetime(2026, 3, 10, tzinfo=UTC)
    add_rating(app, survey_id, 0, when=midnight - timedelta(microseconds=1), comment="day before")
    add_rating(app, survey_id, 10, when=midnight, comment="first instant")
    add_rating(app, survey_id, 9, when=midnight + timedelta(hours=23, minutes=59), comment="last")
    add_rating(app, survey_id, 1, when=midnight + timedelta(days=1), comment="day after")

    report = report_of(app, "nps", survey_id=survey_id, period=Period(day, day))
    assert report.parts[0].score.n == 2
    assert [b.start for b in report.parts[0].trend] == [day]
    assert {c.text for c in report.comments} == {"first instant", "last"}

    html = admin.get(f"/surveys/{survey_id}/report?from=2026-03-10&to=2026-03-10").get_data(
        as_text=True
    )
    page = plain(html)
    assert "n = 2 answers" in page and "+100" in page
    assert "first instant" in page and "day before" not in page and "day after" not in page
    assert "10 Mar 2026 – 10 Mar 2026" in page
    assert 'value="2026-03-10"' in html
    # Open ends: from the 10th on, and up to the 10th.
    assert "n = 3 answers" in plain(
        admin.get(f"/surveys/{survey_id}/report?from=2026-03-10&to=").get_data(as_text=True)
    )
    assert "n = 3 answers" in plain(
        admin.get(f"/surveys/{survey_id}/report?from=&to=2026-03-10").get_data(as_text=True)
    )
    assert "n = 4 answers" in plain(
        admin.get(f"/surveys/{survey_id}/report?from=&to=").get_data(as_text=True)
    )


@pytest.mark.parametrize(
    "query",
    [
        "from=yesterday",
        "from=2026-02-30",
        "to=2026-13-01",
        "from=10/03/2026",
        "from=2026-3-1",
        "from=99999-01-01",
        "from=2026-03-10&to=2026-03-01",
        "from=%00",
        "from=" + "9" * 5000,
    ],
)
def test_invalid_dates_give_a_message_and_the_default_range(app, admin, query):
    survey_id = make_survey(app, "nps", 11)
    add_rating(app, survey_id, 9)
    add_rating(app, survey_id, 3, when=utcnow() - timedelta(days=45))
    for path in (f"/surveys/{survey_id}/report", "/metrics/nps/report"):
        response = admin.get(f"{path}?{query}")
        assert response.status_code == 200
        page = plain(response.get_data(as_text=True))
        assert "Showing the last 30 days instead" in page
        assert "n = 1 answer " in page
    assert admin.get(f"/surveys/{survey_id}/ratings.csv?{query}").status_code == 200


def test_the_far_ends_of_the_calendar_do_not_break(app, admin):
    survey_id = make_survey(app, "ces", 7)
    add_rating(app, survey_id, 5)
    for query in ("from=0001-01-01&to=9999-12-31", "from=9999-12-31&to=9999-12-31"):
        response = admin.get(f"/surveys/{survey_id}/report?{query}")
        assert response.status_code == 200
    assert "n = 1 answer " in plain(
        admin.get(f"/surveys/{survey_id}/report?from=0001-01-01&to=9999-12-31").get_data(
            as_text=True
        )
    )


def test_quick_ranges_link_to_explicit_days(app, admin):
    survey_id = make_survey(app, "nps", 11)
    html = admin.get(f"/surveys/{survey_id}/report").get_data(as_text=True)
    today = utcnow().date()
    for days in (7, 30, 90):
        start = (today - timedelta(days=days - 1)).isoformat()
        assert f"from={start}&amp;to={today.isoformat()}" in html
    assert re.search(r'href="[^"]*from=&amp;to="[^>]*>All time', html)
    assert re.search(r'aria-current="true">30 days', html)
    assert '<label for="range-from"' in html and 'id="range-from" type="date"' in html


def test_utc_days_whatever_the_database_session_time_zone(app):
    survey_id = make_survey(app, "nps", 11)
    late = datetime(2026, 3, 10, 23, 30, tzinfo=UTC)
    add_rating(app, survey_id, 9, when=late)
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            db.engine.dispose()

            @event.listens_for(db.engine, "connect")
            def far_east(dbapi_connection, record):
                with dbapi_connection.cursor() as cursor:
                    cursor.execute("SET TIME ZONE 'Pacific/Kiritimati'")  # UTC+14

            assert db.session.execute(text("SHOW TIME ZONE")).scalar() == "Pacific/Kiritimati"
        report = build_report(
            metric_of(app, "nps"), Scope("nps", survey_id=survey_id), Period(), today=late.date()
        )
        assert [b.start for b in report.parts[0].trend] == [late.date()]


# -- a bounded number of queries --------------------------------------------------------


def count_queries(app, client, path) -> int:
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        response = client.get(path)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 200, path
    return len(statements)


COPY_RATINGS = text(
    """
    INSERT INTO ratings (id, delivery_id, survey_id, agent_ref, value, scale, comment,
                         created_at, updated_at, suspected_scanner)
    SELECT d.id, d.id, d.survey_id, d.agent_ref,
           CASE WHEN s.metric = 'nps' THEN (d.id * 7) % 11 ELSE 1 + (d.id * 7) % s.scale END,
           s.scale,
           CASE WHEN d.id % 50 = 0 THEN 'comment ' || d.id ELSE '' END,
           d.created_at, d.created_at, d.id % 1000 = 0
    FROM deliveries d JOIN surveys s ON s.id = d.survey_id
    WHERE d.id >= :first AND d.id < :last
    """
)


def bulk_ratings(app, survey_ids, total, start_id, agents=6):
    """`total` sent deliveries and their ratings, over `agents` agents (agent-7 first) and
    up to 25 days, quickly.

    The deliveries go straight to the driver (executemany on SQLite, COPY on PostgreSQL,
    no per-value type processing in Python); the ratings are made from them by one
    INSERT … SELECT.
    """
    now = utcnow()
    with app.app_context():
        connection = db.session.connection()
        sqlite = connection.dialect.name == "sqlite"

        def stamp(value):  # as UTCDateTime stores it
            return value.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else value

        # i % 600 decides both the day (i % 25) and the minute: 600 distinct times.
        times = []
        for k in range(600):
            when = now - timedelta(days=k % 25, minutes=k)
            times.append((stamp(when - timedelta(minutes=3)), stamp(when)))
        rows = [
            (
                start_id + i,
                survey_ids[i % len(survey_ids)],
                f"bulk-{start_id + i}",
                f"c{i % 5000}@example.com",
                f"agent-{7 + i % agents}",
                *times[i % 600],
            )
            for i in range(total)
        ]
        columns = "id, survey_id, ticket_id, requester_email, agent_ref, sent_at, created_at"
        if sqlite:
            connection.exec_driver_sql(
                f"INSERT INTO deliveries ({columns}, updated_at, requester_name, state, error) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, '', 'sent', '')",
                [(*row, row[-1]) for row in rows],
            )
        else:
            cursor = connection.connection.driver_connection.cursor()
            with cursor.copy(
                f"COPY deliveries ({columns}, updated_at, requester_name, state, error) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row((*row, row[-1], "", "sent", ""))
        connection.execute(COPY_RATINGS, {"first": start_id, "last": start_id + total})
        db.session.commit()


def test_report_pages_use_a_bounded_number_of_queries(app):
    nps = make_survey(app, "nps", 11)
    csat = make_survey(app, "csat", 5)
    add_person(app, "priya@example.com", helpdesk_user_id="agent-8")
    admin = signed_in(app, add_person(app, "boss@example.com", Role.ADMIN.value))
    agent = signed_in(app, add_person(app, "alex@example.com", helpdesk_user_id="agent-7"))
    surveys = [nps, csat]
    paths = [
        (admin, f"/surveys/{nps}/report"),
        (admin, "/metrics/nps/report"),
        (admin, "/metrics/csat/report?from=&to="),
        (agent, "/me"),
    ]

    # One agent and 12 days first, then 40 agents and 25 days: a query per agent, day or
    # rating would show in the count.
    bulk_ratings(app, surveys, 12, start_id=1_000_000, agents=1)
    few = [count_queries(app, client, path) for client, path in paths]
    started = time.monotonic()
    bulk_ratings(app, surveys, 100_000, start_id=2_000_000, agents=40)
    inserted = time.monotonic() - started
    many = [count_queries(app, client, path) for client, path in paths]

    assert many == few, (few, many)
    assert max(many) <= 15, many
    assert inserted < 60
    with app.app_context():
        report = build_report(metric_of(app, "nps"), Scope("nps"), Period(), [11])
    assert report.n + report.scanner_clicks == 50_006
    assert {"agent-7", "agent-45"} <= {row.ref for row in report.parts[0].agents}


# -- CSV ---------------------------------------------------------------------------------


def read_csv(response):
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    body = response.get_data(as_text=True)
    assert body.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(body[1:])))


def test_csv_has_every_rating_of_the_range_with_formulas_defused(app, admin):
    survey_id = make_survey(app, "csat", 5, name="Stars")
    other = make_survey(app, "csat", 3, name="Smileys")
    add_person(app, "priya@example.com", helpdesk_user_id="agent-8")
    when = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)
    first = add_rating(app, survey_id, 5, agent="agent-8", when=when, comment='=HYPERLINK("x")')
    add_rating(app, survey_id, 2, when=when, comment="+1 -2 @me", email="=cmd@example.com")
    add_rating(app, survey_id, 1, when=when, scanner=True)
    add_rating(app, survey_id, 4, when=when - timedelta(days=5), comment="too early")
    add_rating(app, other, 3, when=when, comment="other survey")

    rows = read_csv(admin.get(f"/surveys/{survey_id}/ratings.csv?from=2026-03-10&to=2026-03-10"))
    assert len(rows) == 3
    assert list(rows[0]) == [
        "rating id",
        "survey id",
        "survey",
        "metric",
        "ticket id",
        "requester email",
        "agent id",
        "agent",
        "value",
        "scale",
        "group",
        "comment",
        "rated at (UTC)",
        "commented at (UTC)",
        "suspected scanner",
    ]
    row = rows[0]
    assert row["rating id"] == str(first)
    assert (row["survey"], row["metric"], row["agent id"], row["agent"]) == (
        "Stars",
        "csat",
        "agent-8",
        "Priya",
    )
    assert (row["value"], row["scale"], row["group"]) == ("5", "5", "positive")
    assert row["comment"] == '\'=HYPERLINK("x")'
    assert row["rated at (UTC)"] == "2026-03-10 09:30:00"
    assert rows[1]["comment"] == "'+1 -2 @me"
    assert rows[1]["requester email"] == "'=cmd@example.com"
    assert rows[1]["group"] == "negative"
    assert [r["suspected scanner"] for r in rows] == ["no", "no", "yes"]

    all_csat = read_csv(admin.get("/metrics/csat/ratings.csv?from=&to="))
    assert len(all_csat) == 5
    assert {r["survey"] for r in all_csat} == {"Stars", "Smileys"}
    assert read_csv(admin.get("/metrics/nps/ratings.csv")) == []


def test_csv_cell_guard():
    for risky in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert csv_cell(risky) == "'" + risky
    assert csv_cell("fine = ok") == "fine = ok"
    assert csv_cell(-5) == -5  # numbers are numbers


def test_csv_streams_in_chunks(app, admin):
    survey_id = make_survey(app, "nps", 11)
    bulk_ratings(app, [survey_id], 1200, start_id=1_000_000)
    response = admin.get("/metrics/nps/ratings.csv?from=&to=", buffered=False)
    assert response.is_streamed
    chunks = list(response.response)
    assert len(chunks) >= 3
    assert sum(chunk.count(b"\n") for chunk in chunks) == 1201
    response.close()


# -- who may see what -----------------------------------------------------------------


def test_agents_get_403_on_admin_reports_and_exports(app, agent):
    survey_id = make_survey(app, "nps", 11)
    add_rating(app, survey_id, 9, agent="agent-7")
    for path in (
        f"/surveys/{survey_id}/report",
        "/metrics/nps/report",
        f"/surveys/{survey_id}/ratings.csv",
        "/metrics/nps/ratings.csv",
    ):
        assert agent.get(path).status_code == 403, path


def test_signed_out_people_are_sent_to_sign_in(app, client):
    survey_id = make_survey(app, "nps", 11)
    for path in (f"/surveys/{survey_id}/report", "/metrics/nps/report", "/me"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_unknown_survey_or_metric_is_404(app, admin):
    assert admin.get("/metrics/nope/report").status_code == 404
    assert admin.get("/metrics/nope/ratings.csv").status_code == 404
    assert admin.get("/surveys/999/report").status_code == 404
    assert admin.get("/surveys/999/ratings.csv").status_code == 404
    assert admin.get("/surveys/99999999999/report").status_code == 404


def test_a_metric_without_surveys_says_how_to_start(app, admin):
    page = plain(admin.get("/metrics/ces/report").get_data(as_text=True))
    assert "No CES survey yet" in page


def test_me_shows_only_the_agents_own_ratings(app, agent):
    nps = make_survey(app, "nps", 11)
    ces = make_survey(app, "ces", 7)
    add_rating(app, nps, 10, agent="agent-7", comment="Alex was great")
    add_rating(app, nps, 9, agent="agent-7")
    add_rating(app, ces, 6, agent="agent-7", comment="easy enough")
    add_rating(app, nps, 0, agent="agent-9", comment="SECRET other agent")
    add_rating(app, nps, 1, agent="agent-9")
    add_sent(app, nps, agent="agent-9")

    html = agent.get("/me").get_data(as_text=True)
    page = plain(html)
    assert "Alex was great" in page and "easy enough" in page
    assert "SECRET" not in html
    assert "NPS score +100" in page and "n = 2 answers" in page  # not −100 … of 4
    assert "CES score 6" in page
    assert "Response rate 100% 2 rated of 2 sent" in page
    assert page.index("NPS score") < page.index("CES score")  # the menu's order
    for query in (
        "agent=agent-9",
        "agent_ref=agent-9",
        "survey_id=1",
        "from=&to=&agent=agent-9",
        "from=2000-01-01&to=2100-01-01&user=2",
    ):
        html = agent.get(f"/me?{query}").get_data(as_text=True)
        assert "SECRET" not in html, query
        assert "Alex was great" in html, query
    assert "Download CSV" not in html


def test_me_for_an_agent_without_ratings_or_helpdesk_id(app):
    survey_id = make_survey(app, "nps", 11)
    add_rating(app, survey_id, 0, agent="agent-9", comment="SECRET")
    lonely = signed_in(app, add_person(app, "new@example.com"))  # no helpdesk id
    html = lonely.get("/me").get_data(as_text=True)
    assert "No ratings for you in this range yet" in html and "SECRET" not in html


def test_me_sends_admins_home(app, admin):
    response = admin.get("/me")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/")


def test_report_page_escapes_customer_words(app, admin):
    survey_id = make_survey(app, "nps", 11, name="<b>NPS</b>")
    add_rating(app, survey_id, 9, comment="<script>alert(1)</script>")
    html = admin.get(f"/surveys/{survey_id}/report").get_data(as_text=True)
    assert "<script>alert(1)" not in html and "&lt;script&gt;" in html
    assert "<b>NPS</b>" not in html


def test_expand_turns_counts_into_values():
    assert expand({3: 2, 1: 1}) == [1, 3, 3]
    assert expand({}) == []
