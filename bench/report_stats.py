"""The report pages and the stats API on N ratings, against the best hand-written SQL for
the same numbers.

Run: .venv/bin/python bench/report_stats.py [ratings] [repetitions]
     (default 1,000,000 and 5)

Fills a fresh PostgreSQL schema (DATABASE_URL, else the local `test` database) by SQL
(`bench/_common.load_ratings`) with `ratings` ratings and as many deliveries again that
got none (sent and unanswered, skipped with a reason, failed, pending...), over four
surveys (NPS, CSAT on 3 and on 5 points, CES), 40 agents (30 of them hub users) and the
last 120 days; 30 % have a comment, 2 % are suspected mail-scanner clicks. The hub runs
under gunicorn (one sync worker, a private redis-server). Then, for each case (`cases`),
side by side in one run and `repetitions` times each (after a warm-up), alternately:

- the hub: the page as a signed-in admin, or the API with an admin's token, over HTTP;
- the baseline: the fewest, best hand-written SQL statements that give the same numbers,
  run directly with SQLAlchemy `text()` on one connection, the same indexes available:
  the ratings counted in the fastest of four forms (`FORMS`, each timed twice in the
  warm-up and checked to give the same numbers); one pass over the deliveries joined
  with the scope's ratings for the response rate and, for a survey's stats, the funnel;
  the 20 newest comments; the agents' names; formulas on the grouped counts in Python.

The numbers must agree: each score, margin, n and group count, trend bucket, agent and
survey row, the response rate, the scanner clicks, the comments listed and the funnel
the hub shows are compared with the baseline's (the script fails otherwise). Prints one
line per case (medians, ratio hub / baseline, how many numbers agreed) and the warm-up
times of the forms, then the worst case and, as the last line, its ratio (goal <= 1.5).
"""

from __future__ import annotations

import math
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import date
from datetime import datetime
from datetime import time as clock
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_app  # noqa: E402
from _common import gunicorn  # noqa: E402
from _common import load_ratings  # noqa: E402
from _common import postgres_schema  # noqa: E402
from _common import redis_server  # noqa: E402

GOAL = 1.5
DAYS = 120
AGENTS = 40
NAMED_AGENTS = 30
PASSWORD = "bench report password"
#: name, metric, scale, weight (share of the ratings, in twentieths)
SURVEYS = (
    ("NPS after support", "nps", 11, 8),
    ("CSAT email", "csat", 3, 5),
    ("CSAT chat", "csat", 5, 3),
    ("CES", "ces", 7, 4),
)
GROUPS = {
    "nps": ("detractor", "passive", "promoter"),
    "csat": ("negative", "neutral", "positive"),
    "ces": ("negative", "neutral", "positive"),
}
#: SQL for the lowest and the highest group of a rating (the middle one is the rest).
LOW = {
    "nps": "r.value <= 6",
    "csat": "r.value <= CASE r.scale WHEN 5 THEN 2 ELSE 1 END",
    "ces": "r.value <= 3",
}
HIGH = {
    "nps": "r.value >= 9",
    "csat": "r.value >= CASE r.scale WHEN 5 THEN 4 WHEN 3 THEN 3 ELSE 2 END",
    "ces": "r.value >= 5",
}
Z95 = 1.959964
T95 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
    2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
    2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
    2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272,
)  # fmt: skip


# -- the scores, from grouped counts -----------------------------------------------------


@dataclass
class Counts:
    """Answers of one group of rows: n, the lowest and highest group, sum of values and
    of their squares (for a mean and its spread)."""

    n: int = 0
    low: int = 0
    high: int = 0
    s1: int = 0
    s2: int = 0

    def add(self, other: Counts) -> None:
        self.n += other.n
        self.low += other.low
        self.high += other.high
        self.s1 += other.s1
        self.s2 += other.s2


def wilson(part: int, n: int) -> float | None:
    if n < 2:
        return None
    p, z2 = part / n, Z95 * Z95
    return 100.0 * Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)


def score(metric: str, c: Counts) -> dict[str, Any]:
    """The metric's score of `c` as the API gives it (value, n, margin, groups, extra)."""
    n = c.n
    groups = dict(zip(GROUPS[metric], (c.low, n - c.low - c.high, c.high), strict=True))
    extra: dict[str, float | None] = {}
    if metric == "nps":
        value = 100.0 * c.high / n - 100.0 * c.low / n if n else None
        margin = None
        if n >= 2:
            plus, minus = c.high / n, c.low / n
            margin = 100.0 * Z95 * math.sqrt((plus + minus - (plus - minus) ** 2) / n)
    elif metric == "csat":
        value = 100.0 * c.high / n if n else None
        margin = wilson(c.high, n)
    else:
        value = c.s1 / n if n else None
        margin = None
        if n >= 2:
            variance = (n * c.s2 - c.s1 * c.s1) / (n * (n - 1))
            quantile = T95[n - 2] if n - 1 <= len(T95) else Z95
            margin = quantile * math.sqrt(variance / n)
        extra = {
            "percent_positive": 100.0 * c.high / n if n else None,
            "percent_positive_margin": wilson(c.high, n),
        }
    return {"value": value, "n": n, "margin": margin, "groups": groups, "extra": extra}


# -- the baseline: hand-written SQL ------------------------------------------------------


@dataclass
class Case:
    """One page or API call and what its numbers cover."""

    name: str
    path: str
    metric: str
    survey: int | None  # None: every survey of the metric
    since: date | None
    until: date | None  # included
    page: bool
    by: str | None = None  # the API's series
    check: Callable[..., int] | None = None


@dataclass
class Numbers:
    """What the baseline found."""

    values: dict[int, dict[int, int]] = field(default_factory=lambda: defaultdict(dict))
    scanner: int = 0
    days: dict[int, dict[date, Counts]] = field(default_factory=lambda: defaultdict(dict))
    agents: dict[int, dict[str | None, Counts]] = field(default_factory=lambda: defaultdict(dict))
    surveys: dict[int, dict[int, Counts]] = field(default_factory=lambda: defaultdict(dict))
    sent: int = 0
    rated: int = 0
    comments: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    funnel: dict[str, Any] | None = None


def _bounds(column: str, since: date | None, until: date | None) -> tuple[str, dict]:
    sql, params = [], {}
    if since is not None:
        sql.append(f"{column} >= :since")
        params["since"] = datetime.combine(since, clock(), UTC)
    if until is not None:
        sql.append(f"{column} < :until")
        params["until"] = datetime.combine(until + timedelta(days=1), clock(), UTC)
    return " AND ".join(sql) or "true", params


#: The ways the baseline may count the ratings (each case times them all in its warm-up
#: and uses the fastest): one statement with GROUPING SETS; one grouped by every column
#: shown (the finest groups, summed up in Python); one statement per grouping; one by day
#: and one by agent and survey (summed up in Python).
FORMS = ("grouping sets", "finest groups", "one per grouping", "days, then the rest")
#: The groupings a case may show, by name: its columns.
DIMENSIONS = {"value": "r.value", "day": "day", "agent_ref": "r.agent_ref",
              "survey_id": "r.survey_id"}  # fmt: skip


def _ratings(conn, case: Case, form: str, numbers: Numbers) -> None:
    """Count the ratings of `case` into `numbers`, in SQL of the form `form`."""
    metric = case.metric
    if case.survey is not None:
        surveys, params = "r.survey_id = :survey", {"survey": case.survey}
    else:
        surveys = "r.survey_id IN (SELECT id FROM surveys WHERE metric = :metric)"
        params = {"metric": metric}
    period, bounds = _bounds("r.created_at", case.since, case.until)
    params.update(bounds)
    # What is shown: a page shows the trend (days), agents and, for a metric, surveys; the
    # API only the series it is asked for.
    shown = ["value"]
    if case.page or case.by in ("day", "week"):
        shown.append("day")
    if case.page or case.by == "agent":
        shown.append("agent_ref")
    if (case.page and case.survey is None) or case.by == "survey":
        shown.append("survey_id")
    person = "NOT r.suspected_scanner"
    source = (
        "FROM ratings r, LATERAL (SELECT date(timezone('UTC', r.created_at)) AS day) d "
        f"WHERE {surveys} AND {period}"
    )
    answers = (
        f"count(*) FILTER (WHERE {person}) AS n, "
        "count(*) FILTER (WHERE r.suspected_scanner) AS scanner, "
        f"count(*) FILTER (WHERE {person} AND {LOW[metric]}) AS low, "
        f"count(*) FILTER (WHERE {person} AND {HIGH[metric]}) AS high, "
        f"coalesce(sum(r.value) FILTER (WHERE {person}), 0) AS s1, "
        f"coalesce(sum(r.value * r.value) FILTER (WHERE {person}), 0) AS s2"
    )
    # The forms that count per value: (statement, the groupings it counts).
    per_value: list[tuple[str, list[str]]] = []
    if form == "finest groups":
        per_value.append((_per_value(shown, source, person), shown))
    elif form == "days, then the rest":
        first = [name for name in shown if name in ("value", "day")]
        rest = [name for name in shown if name not in first]
        if "day" not in first:
            first, rest = shown, []
        per_value.append((_per_value(first, source, person), first))
        if rest:
            rest = ["value", *rest]
            per_value.append((_per_value(rest, f"{source} AND {person}", person), rest))
    if per_value:
        for statement, names in per_value:
            for row in conn.execute(text(statement), params).mappings():
                scale, value, n = row["scale"], row["value"], row["n"]
                if "day" in names or names == shown:  # (the pass with every rating)
                    numbers.scanner += row["scanner"]
                    if n:
                        values = numbers.values[scale]
                        values[value] = values.get(value, 0) + n
                if not n:
                    continue
                low, high = _low_high(metric, scale, value)
                counts = Counts(n, low * n, high * n, value * n, value * value * n)
                for name in names[1:]:
                    _table(numbers, name, scale).setdefault(row[name], Counts()).add(counts)
        return
    if form == "grouping sets":
        grouping = ", ".join(
            f"GROUPING({DIMENSIONS[name]}) AS no_{name}, {DIMENSIONS[name]} AS {name}"
            for name in shown
        )
        sets = ", ".join(f"(r.scale, {DIMENSIONS[name]})" for name in shown)
        statements = [
            f"SELECT r.scale, {grouping}, {answers} {source} GROUP BY GROUPING SETS ({sets})"
        ]
    else:
        statements = [
            f"SELECT r.scale, {DIMENSIONS[name]} AS {name}, {answers} {source} "
            f"GROUP BY r.scale, {DIMENSIONS[name]}"
            for name in shown
        ]
    for number, statement in enumerate(statements):
        for row in conn.execute(text(statement), params).mappings():
            name = (
                shown[number]
                if form == "one per grouping"
                else next(name for name in shown if not row[f"no_{name}"])
            )
            if name == "value":
                numbers.scanner += row["scanner"]
                if row["n"]:
                    numbers.values[row["scale"]][row["value"]] = row["n"]
            elif row["n"]:  # (a group of only scanner clicks has no answer)
                counts = Counts(row["n"], row["low"], row["high"], int(row["s1"]), int(row["s2"]))
                _table(numbers, name, row["scale"])[row[name]] = counts


def _per_value(names: list[str], source: str, person: str) -> str:
    """SQL: the answers and scanner clicks per scale, value and the groupings `names`."""
    columns = ", ".join(f"{DIMENSIONS[name]} AS {name}" for name in names)
    groups = ", ".join(DIMENSIONS[name] for name in names)
    return (
        f"SELECT r.scale, {columns}, count(*) FILTER (WHERE {person}) AS n, "
        f"count(*) FILTER (WHERE r.suspected_scanner) AS scanner {source} "
        f"GROUP BY r.scale, {groups}"
    )


def _table(numbers: Numbers, name: str, scale: int) -> dict[Any, Counts]:
    """Where the counts per `name` (day, agent_ref or survey_id) on `scale` go."""
    return {"day": numbers.days, "agent_ref": numbers.agents, "survey_id": numbers.surveys}[name][
        scale
    ]


def hand_written(conn, case: Case, form: str) -> Numbers:
    """The numbers of `case` from the fewest, best SQL statements; the ratings counted in
    the form `form` (one of `FORMS`)."""
    numbers = Numbers()
    _ratings(conn, case, form, numbers)
    params: dict[str, Any] = {"metric": case.metric}
    if case.survey is not None:
        params = {"survey": case.survey}
    person = "NOT r.suspected_scanner"
    surveys = (
        "r.survey_id = :survey"
        if case.survey is not None
        else ("r.survey_id IN (SELECT id FROM surveys WHERE metric = :metric)")
    )
    period, bounds = _bounds("r.created_at", case.since, case.until)
    params.update(bounds)

    # The deliveries: the response rate (emails sent in the period, and how many of them a
    # person rated) and for a survey's stats its funnel (deliveries the hub saw in the
    # period), in one pass over the deliveries joined with their rating.
    deliveries = (
        "d.survey_id = :survey"
        if case.survey is not None
        else ("d.survey_id IN (SELECT id FROM surveys WHERE metric = :metric)")
    )
    in_sent, sent_params = _bounds("d.sent_at", case.since, case.until)
    in_sent = f"d.sent_at IS NOT NULL AND {in_sent}"
    funnel = case.survey is not None and not case.page
    if funnel:
        in_seen, seen_params = _bounds("d.created_at", case.since, case.until)
        rows = conn.execute(
            text(
                f"""
                SELECT d.state, d.skip_reason,
                       count(*) FILTER (WHERE {in_seen}) AS seen,
                       count(*) FILTER (WHERE {in_seen} AND d.state = 'sent'
                                        AND (d.opened_at IS NOT NULL OR r.id IS NOT NULL))
                           AS opened,
                       count(r.id) FILTER (WHERE {in_seen} AND d.state = 'sent') AS rated,
                       count(*) FILTER (WHERE {in_seen} AND d.state = 'sent'
                                        AND r.comment <> '') AS commented,
                       count(*) FILTER (WHERE {in_sent}) AS sent_in_period,
                       count(r.id) FILTER (WHERE {in_sent} AND NOT r.suspected_scanner)
                           AS rated_in_period
                FROM deliveries d LEFT JOIN ratings r ON r.delivery_id = d.id AND {surveys}
                WHERE {deliveries} AND (({in_seen}) OR ({in_sent}))
                GROUP BY d.state, d.skip_reason
                """
            ),
            {**params, **sent_params, **seen_params},
        ).all()
        stages = dict.fromkeys(("seen", "eligible", "sent", "opened", "rated", "commented"), 0)
        skipped: dict[str, int] = {}
        not_sent: dict[str, int] = {}
        for row in rows:
            numbers.sent += row.sent_in_period
            numbers.rated += row.rated_in_period
            stages["seen"] += row.seen
            if row.state == "skipped":
                if row.seen:
                    skipped[row.skip_reason or ""] = row.seen
                continue
            stages["eligible"] += row.seen
            if row.state == "sent":
                stages["sent"] += row.seen
                stages["opened"] += row.opened
                stages["rated"] += row.rated
                stages["commented"] += row.commented
            elif row.seen:
                not_sent[row.state] = row.seen
        numbers.funnel = {"stages": stages, "skipped": skipped, "not_sent": not_sent}
    else:
        sent, rated = conn.execute(
            text(
                f"""
                SELECT count(*), count(r.id)
                FROM deliveries d
                LEFT JOIN ratings r
                       ON r.delivery_id = d.id AND {surveys} AND NOT r.suspected_scanner
                WHERE {deliveries} AND {in_sent}
                """
            ),
            {**params, **sent_params},
        ).one()
        numbers.sent, numbers.rated = sent, rated

    if case.page:
        numbers.comments = list(
            conn.execute(
                text(
                    f"""
                    SELECT d.ticket_id
                    FROM (SELECT r.id, r.delivery_id,
                                 coalesce(r.commented_at, r.created_at) AS written
                          FROM ratings r
                          WHERE {surveys} AND {period} AND {person} AND r.comment <> ''
                          ORDER BY written DESC, r.id DESC LIMIT 20) AS r
                    JOIN deliveries d ON d.id = r.delivery_id
                    ORDER BY r.written DESC, r.id DESC
                    """
                ),
                params,
            ).scalars()
        )
    if case.page or case.by == "agent":
        for ref, name in conn.execute(
            text(
                "SELECT helpdesk_user_id, coalesce(nullif(name, ''), email) FROM users "
                "WHERE helpdesk_user_id IS NOT NULL ORDER BY id"
            )
        ):
            numbers.names.setdefault(ref, name)
    return numbers


# -- the agreement check -----------------------------------------------------------------


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def same_score(got: dict[str, Any], want: dict[str, Any], where: str) -> int:
    """Compare an API score with the baseline's; the number of values compared."""
    assert got["n"] == want["n"], (where, got, want)
    assert got["groups"] == want["groups"], (where, got, want)
    assert close(got["value"], want["value"]), (where, got, want)
    assert close(got["margin"], want["margin"]), (where, got, want)
    return 3 + len(want["groups"])


def week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def buckets(numbers: Numbers, scale: int, granularity: str) -> dict[date, Counts]:
    """The baseline's days, summed per trend bucket."""
    out: dict[date, Counts] = defaultdict(Counts)
    for day, counts in numbers.days.get(scale, {}).items():
        key = week_start(day) if granularity == "week" else day
        if granularity == "month":
            key = day.replace(day=1)
        out[key].add(counts)
    return out


def overall(numbers: Numbers, metric: str, scale: int) -> Counts:
    """The answers on one scale, from the baseline's counts per value."""
    c = Counts()
    for value, n in numbers.values.get(scale, {}).items():
        low, high = _low_high(metric, scale, value)
        c.add(Counts(n, low * n, high * n, value * n, value * value * n))
    return c


def _low_high(metric: str, scale: int, value: int) -> tuple[int, int]:
    if metric == "nps":
        return int(value <= 6), int(value >= 9)
    if metric == "ces":
        return int(value <= 3), int(value >= 5)
    low, high = {2: (1, 2), 3: (1, 3), 5: (2, 4)}[scale]
    return int(value <= low), int(value >= high)


def scales_shown(numbers: Numbers, case: Case, surveys: dict[int, tuple]) -> list[int]:
    """The scales a report shows: those answered, and a survey's own scale (a page of a
    metric shows every scale its surveys use)."""
    shown = set(numbers.values)
    if case.survey is not None:
        shown.add(surveys[case.survey][2])
    elif case.page:
        shown |= {scale for _, metric, scale, _ in surveys.values() if metric == case.metric}
    return sorted(shown)


def check_api(body: dict[str, Any], numbers: Numbers, case: Case, surveys: dict[int, tuple]) -> int:
    """The API's numbers equal the baseline's; the number of values compared."""
    compared = 0
    scales = scales_shown(numbers, case, surveys)
    assert [s["scale"] for s in body["scores"]] == scales, (body["scores"], scales)
    for got in body["scores"]:
        compared += same_score(
            got, score(case.metric, overall(numbers, case.metric, got["scale"])), "score"
        )
    assert body["response_rate"]["sent"] == numbers.sent, (body["response_rate"], numbers.sent)
    assert body["response_rate"]["rated"] == numbers.rated, (body["response_rate"], numbers.rated)
    compared += 2
    if case.by == "agent":
        want = {
            (scale, ref or ""): counts
            for scale, agents in numbers.agents.items()
            for ref, counts in agents.items()
        }
        got = {(row["scale"], row["key"]): row for row in body["series"]}
        assert set(got) == set(want), (sorted(got), sorted(want))
        for key, counts in want.items():
            ref = key[1] or None
            label = "No agent" if ref is None else numbers.names.get(ref, ref)
            assert got[key]["label"] == label, (got[key], label)
            compared += 1 + same_score(got[key], score(case.metric, counts), f"agent {key}")
    elif case.by in ("day", "week"):
        series: dict[int, dict[date, dict]] = defaultdict(dict)
        for row in body["series"]:
            series[row["scale"]][date.fromisoformat(row["key"])] = row
        for scale in scales:
            want = buckets(numbers, scale, case.by)
            filled = {day: row for day, row in series[scale].items() if row["n"]}
            assert set(filled) == set(want), (scale, sorted(filled), sorted(want))
            for day, counts in want.items():
                compared += same_score(filled[day], score(case.metric, counts), f"{day}")
    if case.survey is not None:
        funnel = body["funnel"]
        want = numbers.funnel
        assert funnel["stages"] == want["stages"], (funnel["stages"], want["stages"])
        assert {k: v for k, v in funnel["skipped"].items() if v} == want["skipped"], funnel
        assert {k: v for k, v in funnel["not_sent"].items() if v} == want["not_sent"], funnel
        compared += len(want["stages"]) + len(want["skipped"]) + len(want["not_sent"])
    return compared


class Rows(HTMLParser):
    """Every table row of a page, as the text of its cells."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th") and self.rows:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def shown(value: float | None, unit: str) -> str:
    from hub.web.reports import report_score

    return report_score(value, unit)


def shown_margin(value: float | None, unit: str) -> str:
    from hub.web.reports import report_margin

    return report_margin(value, unit)


UNITS = {"nps": "points", "csat": "%", "ces": "/7"}


def check_page(html: str, numbers: Numbers, case: Case, surveys: dict[int, tuple]) -> int:
    """The page shows the baseline's numbers; the number of values compared."""
    from hub.web.reports import report_group

    compared = 0
    parser = Rows()
    parser.feed(html)
    rows = {tuple(row) for row in parser.rows}
    plain = " ".join(re.sub(r"<[^>]+>", " ", html).split())
    metric, unit = case.metric, UNITS[case.metric]
    names = numbers.names
    for scale in scales_shown(numbers, case, surveys):
        c = overall(numbers, metric, scale)
        if not c.n:
            continue
        want = score(metric, c)
        card = f"{shown(want['value'], unit)}"
        assert f" {card} " in plain or f" {card}/7 " in plain, card
        assert f"{shown_margin(want['margin'], unit)}" in plain, want
        assert f"n = {c.n:,} answers" in plain, c.n
        for name, count in want["groups"].items():
            share = f"{100.0 * count / c.n:.1f}".rstrip("0").rstrip(".") + "%"
            assert any(
                row[0].startswith(report_group(name))
                and row[-1] == f"{count:,}"
                and row[1] == share
                for row in rows
                if len(row) == 3
            ), (name, count, share)
        compared += 3 + len(want["groups"])
        # The trend's table: one row per bucket (label, score, margin, n).
        days = numbers.days.get(scale, {})
        if days:
            end = case.until or datetime.now(UTC).date()
            start = case.since or min(days)
            span = (end - start).days + 1
            granularity = "day" if span <= 62 else "week" if span <= 731 else "month"
            for bucket in buckets(numbers, scale, granularity).values():
                want = score(metric, bucket)
                row = (
                    shown(want["value"], unit),
                    shown_margin(want["margin"], unit),
                    f"{bucket.n:,}",
                )
                assert any(tuple(r[1:]) == row for r in rows if len(r) == 4), row
                compared += 3
        # The agents' table: name (and helpdesk id), score, margin, n, the groups' counts.
        for ref, counts in numbers.agents.get(scale, {}).items():
            want = score(metric, counts)
            name = "No agent" if ref is None else names.get(ref, ref)
            label = name if ref is None or name == ref else f"{name} {ref}"
            row = (
                label,
                shown(want["value"], unit),
                shown_margin(want["margin"], unit),
                f"{counts.n:,}",
                *(f"{want['groups'][g]:,}" for g in reversed(GROUPS[metric])),
            )
            assert row in rows, (row, [r for r in rows if r and r[0] == label])
            compared += len(row)
    for scale, survey_id, counts in (
        (scale, survey_id, counts)
        for scale, table in numbers.surveys.items()
        for survey_id, counts in table.items()
    ):
        want = score(metric, counts)
        name, _, _, active = surveys[survey_id]
        row = (
            name,
            f"{scale} points",
            "active" if active else "inactive",
            shown(want["value"], unit),
            shown_margin(want["margin"], unit),
            f"{counts.n:,}",
        )
        assert row in rows, row
        compared += 3
    assert f"{numbers.rated:,} rated of {numbers.sent:,} sent" in plain
    compared += 2
    if numbers.scanner:
        assert re.search(rf"\b{numbers.scanner:,} ratings? that look", plain), numbers.scanner
        compared += 1
    tickets = re.findall(r"Ticket (T\d+)", plain)
    assert tickets == numbers.comments, (tickets, numbers.comments)
    compared += len(tickets)
    return compared


# -- the run -----------------------------------------------------------------------------


def setup(app) -> tuple[dict[int, tuple], str, list[int]]:
    """The connection, surveys, admin and agents; (surveys by id, the admin's token,
    survey ids weighted for the loader)."""
    from hub.extensions import db
    from hub.models import Connection
    from hub.models import Survey
    from hub.models import User
    from hub.tokens import create_token

    with app.app_context():
        connection = Connection(helpdesk="kustomer", name="acme", settings={})
        db.session.add(connection)
        db.session.flush()
        rows = [
            Survey(connection=connection, metric=metric, scale=scale, name=name, active=True)
            for name, metric, scale, _ in SURVEYS
        ]
        admin = User(email="admin@example.com", name="Admin", role="admin", status="active")
        admin.set_password(PASSWORD)
        people = [
            User(email=f"agent{k}@example.com", name=f"Agent Person {k}", role="agent",
                 status="active", connection_id=connection.id, helpdesk_user_id=f"agent-{k}")
            for k in range(NAMED_AGENTS)
        ]  # fmt: skip
        db.session.add_all([*rows, admin, *people])
        db.session.commit()
        token = create_token(admin, "bench", "read")[1]
        surveys = {s.id: (s.name, s.metric, s.scale, s.active) for s in rows}
        weighted = [
            s.id for s, (*_, weight) in zip(rows, SURVEYS, strict=True) for _ in range(weight)
        ]
    return surveys, token, weighted


def sign_in(base: str) -> requests.Session:
    session = requests.Session()
    page = session.get(f"{base}/login", timeout=60).text
    csrf = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', page).group(1)
    response = session.post(
        f"{base}/login",
        data={"csrf_token": csrf, "email": "admin@example.com", "password": PASSWORD},
        timeout=60,
    )
    response.raise_for_status()
    assert "/login" not in response.url, "the admin could not sign in"
    return session


def cases(surveys: dict[int, tuple], today: date) -> list[Case]:
    by_name = {name: sid for sid, (name, *_) in surveys.items()}
    nps, ces = by_name["NPS after support"], by_name["CES"]
    month_ago, two_months = today - timedelta(days=30), today - timedelta(days=59)
    return [
        Case("survey report, NPS, last 30 days (default)", f"/surveys/{nps}/report",
             "nps", nps, today - timedelta(days=29), today, page=True),
        Case("metric report, CSAT (3 and 5 points), all time", "/metrics/csat/report?from=&to=",
             "csat", None, None, None, page=True),
        Case("survey report, CES, from/to 30 days", f"/surveys/{ces}/report?from="
             f"{two_months.isoformat()}&to={month_ago.isoformat()}",
             "ces", ces, two_months, month_ago, page=True),
        Case("stats API, NPS survey by agent, all time", f"/api/v1/stats?survey={nps}&by=agent",
             "nps", nps, None, None, page=False, by="agent"),
        Case("stats API, CSAT by day, 60 days", f"/api/v1/stats?metric=csat&by=day&from="
             f"{two_months.isoformat()}&to={today.isoformat()}",
             "csat", None, two_months, today, page=False, by="day"),
    ]  # fmt: skip


def main() -> None:
    ratings = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    repetitions = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with (
        postgres_schema() as url,
        tempfile.TemporaryDirectory() as tmp,
        redis_server(Path(tmp)) as redis_url,
    ):
        workdir = Path(tmp)
        app, env = bench_app(
            url, workdir, REDIS_URL=redis_url, HUB_API_RATE_LIMIT="100000 per minute"
        )
        surveys, token, weighted = setup(app)
        started = time.monotonic()
        load_ratings(url, weighted, ratings, unrated=ratings, days=DAYS, agents=AGENTS)
        print(
            f"loaded {ratings} ratings and {2 * ratings} deliveries in "
            f"{time.monotonic() - started:.1f} s"
        )
        engine = create_engine(url)
        today = datetime.now(UTC).date()
        results = []
        with gunicorn(env, workdir / "gunicorn.log") as (base, _pid), engine.connect() as conn:
            browser = sign_in(base)
            api = requests.Session()
            api.headers["Authorization"] = f"Bearer {token}"
            for case in cases(surveys, today):
                client = browser if case.page else api

                def hub(case: Case = case, client: requests.Session = client) -> requests.Response:
                    response = client.get(f"{base}{case.path}", timeout=900)
                    response.raise_for_status()
                    assert "/login" not in response.url
                    return response

                def baseline(case: Case = case, form: str = FORMS[0]) -> Numbers:
                    numbers = hand_written(conn, case, form)
                    conn.rollback()
                    return numbers

                # Warm-up and the agreement check: every form of the baseline gives the same
                # numbers, and the hub shows them; the fastest form is the baseline.
                response = hub()
                timed = {}
                for form in FORMS * 2:
                    started = time.perf_counter()
                    numbers = baseline(form=form)
                    timed[form] = min(timed.get(form, math.inf), time.perf_counter() - started)
                    if form == FORMS[0]:
                        first = numbers
                    assert numbers == first, (form, case.name)
                form = min(timed, key=timed.get)
                if case.page:
                    compared = check_page(response.text, numbers, case, surveys)
                else:
                    compared = check_api(response.json(), numbers, case, surveys)
                hub_times, sql_times = [], []
                for _ in range(repetitions):
                    started = time.perf_counter()
                    hub()
                    hub_times.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    baseline(form=form)
                    sql_times.append(time.perf_counter() - started)
                hub_s, sql_s = statistics.median(hub_times), statistics.median(sql_times)
                results.append((case.name, hub_s / sql_s))
                print(
                    f"{case.name}: hub {hub_s * 1000:.0f} ms, hand-written SQL "
                    f"{sql_s * 1000:.0f} ms ({form}), ratio {hub_s / sql_s:.2f} "
                    f"(numbers agree: {compared} compared)"
                )
                forms = ", ".join(f"{name} {seconds * 1000:.0f}" for name, seconds in timed.items())
                print(f"  warm-up, the hand-written forms in ms: {forms}")
        engine.dispose()
        worst = max(results, key=lambda item: item[1])
        print(f"worst: {worst[0]} (goal <= {GOAL})")
        print(f"ratio {worst[1]:.2f}")


if __name__ == "__main__":
    main()
