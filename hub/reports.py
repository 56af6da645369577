"""Report numbers from ratings and deliveries: scores, trend, distribution, response rate,
per-agent and per-survey scores, latest comments, and the rows of the ratings export.

Every score comes from the metric plugin's own `score_counts()` (equal to its `score()` of
the values) and `group()`. The database only counts, grouped by value and scale (and by
day, agent or survey), and the metric scores the counts: no work per rating in Python. So
a report costs the same few queries whether there are ten ratings or a million, and it
cannot disagree with the metric's formula.

Suspected mail-scanner clicks (`Rating.suspected_scanner`) are not a person's answer yet:
they stay out of every number (as they stay out of the helpdesk write-back) until the
person confirms, and are counted on their own so a report can say so. The export lists
them, marked.

Periods are whole days in UTC, both ends included.
"""

from __future__ import annotations

from collections import Counter
from collections import defaultdict
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import date
from datetime import datetime
from datetime import time
from datetime import timedelta
from typing import Any

from sqlalchemy import Date
from sqlalchemy import Select
from sqlalchemy import and_
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from hub.contracts import Metric
from hub.contracts import Score
from hub.extensions import db
from hub.models import Delivery
from hub.models import Rating
from hub.models import Survey
from hub.models import User

#: How many of the latest comments a report lists.
LATEST_COMMENTS = 20
#: Trend buckets: one per day up to this many days, one per week up to WEEKLY_UP_TO days,
#: one per month beyond.
DAILY_UP_TO = 62
WEEKLY_UP_TO = 731
#: Rows fetched at a time while exporting (the export never holds all ratings in memory).
EXPORT_BATCH = 1000
#: Answers a person gave (suspected scanner clicks left out).
COUNTS_BY_PERSON = Rating.suspected_scanner.is_(False)


class UtcDay(FunctionElement):
    """The UTC calendar day of a timestamp column, read back as a `date` on every database."""

    type = Date()
    name = "utc_day"
    inherit_cache = True


@compiles(UtcDay)
def _utc_day(element: UtcDay, compiler: Any, **kw: Any) -> str:
    # SQLite keeps UTCDateTime values as UTC text; date() takes their day.
    return f"date({compiler.process(element.clauses, **kw)})"


@compiles(UtcDay, "postgresql")
def _utc_day_postgresql(element: UtcDay, compiler: Any, **kw: Any) -> str:
    # date() of a timestamptz would use the session's time zone; reports count UTC days.
    # The zone is literal text, not a parameter, so GROUP BY matches the selected column.
    return f"date(timezone('UTC', {compiler.process(element.clauses, **kw)}))"


def _as_date(value: date | datetime | str) -> date:
    """A day as a `date`, whatever the driver returned (SQLite text, PostgreSQL date)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


@dataclass(frozen=True)
class Period:
    """Whole UTC days from `start` to `end`, both included; None leaves that side open."""

    start: date | None = None
    end: date | None = None

    @classmethod
    def last_days(cls, days: int, today: date) -> Period:
        """The `days` days up to and including `today`."""
        return cls(today - timedelta(days=days - 1), today)

    @property
    def since(self) -> datetime | None:
        """The first instant of the period (None: no lower bound)."""
        return datetime.combine(self.start, time(), UTC) if self.start else None

    @property
    def until(self) -> datetime | None:
        """The first instant after the period (None: no upper bound)."""
        if self.end is None or self.end == date.max:
            return None
        return datetime.combine(self.end + timedelta(days=1), time(), UTC)

    def where(self, column: Any) -> list[ColumnElement[bool]]:
        """Conditions that keep `column` (a UTC timestamp) inside the period."""
        conditions = []
        if self.since is not None:
            conditions.append(column >= self.since)
        if self.until is not None:
            conditions.append(column < self.until)
        return conditions


@dataclass(frozen=True)
class Scope:
    """Which ratings a report covers: one metric's, optionally one survey's and one
    agent's (`agent_ref`, the helpdesk user id the rating is attributed to)."""

    metric: str
    survey_id: int | None = None
    agent_ref: str | None = None
    #: With `agent_ref`: the agent's helpdesk connection (their ids mean them only there).
    connection_id: int | None = None

    def surveys(self, model: type[Rating] | type[Delivery]) -> ColumnElement[bool]:
        """The condition on `model.survey_id` for the scope's surveys."""
        if self.survey_id is not None:
            return model.survey_id == self.survey_id
        surveys = select(Survey.id).where(Survey.metric == self.metric)
        if self.connection_id is not None:
            surveys = surveys.where(Survey.connection_id == self.connection_id)
        return model.survey_id.in_(surveys)

    def _of(self, model: type[Rating] | type[Delivery]) -> list[ColumnElement[bool]]:
        conditions = [self.surveys(model)]
        if self.agent_ref is not None:
            conditions.append(model.agent_ref == self.agent_ref)
        return conditions

    def ratings(self, period: Period) -> list[ColumnElement[bool]]:
        """Conditions on `Rating` for ratings given in `period` (scanner clicks included)."""
        return self._of(Rating) + period.where(Rating.created_at)

    def deliveries(self, period: Period) -> list[ColumnElement[bool]]:
        """Conditions on `Delivery` for survey emails sent in `period`."""
        return [*self._of(Delivery), Delivery.sent_at.is_not(None), *period.where(Delivery.sent_at)]


@dataclass(frozen=True)
class ValueCount:
    """How many answers gave one value, and their share of all answers (percent)."""

    value: int
    label: str
    count: int
    share: float | None


@dataclass(frozen=True)
class GroupCount:
    """One group of answers (e.g. promoters) with the values that belong to it."""

    name: str
    count: int
    share: float | None
    values: tuple[ValueCount, ...]

    @property
    def value_span(self) -> str:
        """The values of the group, e.g. "9–10" or "3"."""
        if not self.values:
            return ""
        low, high = self.values[0].value, self.values[-1].value
        return str(low) if low == high else f"{low}–{high}"


@dataclass(frozen=True)
class Bucket:
    """The score of the answers given from `start` to `end` (UTC days, included)."""

    start: date
    end: date
    score: Score


@dataclass(frozen=True)
class AgentScore:
    """One agent's score; `name` is the hub user's name, else the raw helpdesk id."""

    ref: str | None
    name: str
    score: Score


@dataclass(frozen=True)
class SurveyScore:
    """One survey's score on one scale (a metric report lists every survey)."""

    survey_id: int
    name: str
    scale: int
    active: bool
    score: Score


@dataclass(frozen=True)
class ResponseRate:
    """Survey emails sent in the period, and how many of them have a rating.

    `sent` counts deliveries whose `sent_at` falls in the period; `rated` counts those of
    them a person rated, whenever they did (a rating days after the email still answers
    it). `rate` is rated ÷ sent in percent, None when nothing was sent.
    """

    sent: int
    rated: int

    @property
    def rate(self) -> float | None:
        return 100.0 * self.rated / self.sent if self.sent else None


@dataclass(frozen=True)
class Comment:
    """A rating with the customer's comment, for the latest-comments list."""

    rating_id: int
    survey_id: int
    survey_name: str
    value: int
    scale: int
    group: str
    text: str
    ticket_id: str
    agent_ref: str | None
    agent_name: str
    rated_at: datetime
    commented_at: datetime | None


@dataclass(frozen=True)
class ScalePart:
    """Everything computed on one scale: a metric's ratings on different scales (2-, 3-
    and 5-point CSAT) are never rescaled into one number."""

    scale: int
    score: Score
    distribution: tuple[GroupCount, ...]
    trend: tuple[Bucket, ...]
    agents: tuple[AgentScore, ...]


@dataclass(frozen=True)
class Report:
    """A metric's report over one scope and period."""

    metric: Metric
    scope: Scope
    period: Period
    granularity: str  # "day", "week" or "month": the trend's bucket
    parts: tuple[ScalePart, ...]
    response: ResponseRate
    comments: tuple[Comment, ...]
    scanner_clicks: int
    surveys: tuple[SurveyScore, ...] = field(default=())

    @property
    def n(self) -> int:
        """Answers counted, over every scale."""
        return sum(part.score.n for part in self.parts)

    @property
    def mixed_scales(self) -> bool:
        return len(self.parts) > 1


def expand(counts: Counter[int] | dict[int, int]) -> list[int]:
    """The list of values that `counts` (value → how many) stands for."""
    return [value for value, count in sorted(counts.items()) for _ in range(count)]


def agent_names() -> dict[str, str]:
    """Hub users' names by their helpdesk user id (their email when they have no name)."""
    query = select(User.helpdesk_user_id, User.name, User.email).where(
        User.helpdesk_user_id.is_not(None)
    )
    names: dict[str, str] = {}
    for ref, name, email in db.session.execute(query):
        names.setdefault(ref, name or email)
    return names


def _name(ref: str | None, names: dict[str, str]) -> str:
    if ref is None:
        return "No agent"
    return names.get(ref, ref)


def granularity_for(first: date, last: date) -> str:
    """The trend's bucket for a span of days: day, week (from Monday) or month."""
    days = (last - first).days + 1
    if days <= DAILY_UP_TO:
        return "day"
    return "week" if days <= WEEKLY_UP_TO else "month"


def bucket_start(day: date, granularity: str) -> date:
    """The first day of the bucket `day` belongs to."""
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    return day


def _next_bucket(start: date, granularity: str) -> date:
    if granularity == "week":
        return start + timedelta(days=7)
    if granularity == "month":
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return start + timedelta(days=1)


def trend_span(period: Period, days: Iterable[date], today: date) -> tuple[date, date] | None:
    """The days the trend covers: the period, with an open start beginning at the first
    answer and an end no later than today (or the last answer, if later). A period with no
    answers has no trend. A long period that began well before the first answer starts at
    it instead, so the chart is not years of nothing."""
    days = sorted(days)
    if not days:
        return None
    first, last = days[0], days[-1]
    end = period.end or today
    if end > today:
        end = max(today, last)
    start = period.start or first
    if start < first and (end - start).days > WEEKLY_UP_TO:
        start = first
    return start, end


def trend_buckets(
    metric: Metric,
    scale: int,
    day_counts: dict[date, Counter[int]],
    span: tuple[date, date],
    granularity: str,
) -> tuple[Bucket, ...]:
    """The metric's score per bucket over `span`, empty buckets included (n = 0)."""
    first, last = span
    grouped: dict[date, Counter[int]] = defaultdict(Counter)
    for day, counts in day_counts.items():
        if first <= day <= last:
            grouped[bucket_start(day, granularity)].update(counts)
    buckets = []
    start = bucket_start(first, granularity)
    while start <= last:
        following = _next_bucket(start, granularity)
        buckets.append(
            Bucket(
                max(start, first),
                min(following - timedelta(days=1), last),
                metric.score_counts(grouped.get(start, Counter()), scale),
            )
        )
        start = following
    return tuple(buckets)


def distribution(metric: Metric, scale: int, counts: Counter[int]) -> tuple[GroupCount, ...]:
    """Answers per value, gathered in the metric's groups (in `metric.groups` order, each
    group's values ascending); groups with no value on this scale are left out."""
    n = sum(counts.values())
    by_group: dict[str, list[ValueCount]] = {name: [] for name in metric.groups}
    for point in sorted(metric.points(scale), key=lambda p: p.value):
        count = counts.get(point.value, 0)
        share = 100.0 * count / n if n else None
        row = ValueCount(point.value, str(point.label), count, share)
        by_group.setdefault(metric.group(point.value, scale), []).append(row)
    groups = []
    for name, values in by_group.items():
        if values:
            total = sum(v.count for v in values)
            groups.append(GroupCount(name, total, 100.0 * total / n if n else None, tuple(values)))
    return tuple(groups)


@dataclass
class RatingCounts:
    """Answers counted per scale and value: in all, and per day, agent or survey when
    asked; and the suspected scanner clicks."""

    values: dict[int, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    scanner: int = 0
    days: dict[int, dict[date, Counter[int]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(Counter))
    )
    agents: dict[int, dict[str | None, Counter[int]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(Counter))
    )
    surveys: dict[tuple[int, int], Counter[int]] = field(
        default_factory=lambda: defaultdict(Counter)
    )


def count_ratings(
    scope: Scope,
    period: Period,
    *,
    by_day: bool = False,
    by_agent: bool = False,
    by_survey: bool = False,
) -> RatingCounts:
    """The answers of `scope` in `period` per scale and value (and per day, agent and
    survey when asked), in one pass over the ratings, or two when days are asked for
    together with agents or surveys.

    Each pass groups by every column asked for at once and the groups are summed up
    here: one pass does the work of one query per grouping (every ratings row is read
    once, not once per grouping). Days are not crossed with agents or surveys, whose
    product could grow large over long periods: those get a second pass.
    """
    counts = RatingCounts()
    day = UtcDay(Rating.created_at)
    # The first pass: every rating (scanner clicks counted on their own), by day or else
    # by agent and survey.
    keys = {"day": day} if by_day else {}
    if not by_day:
        keys |= {"agent": Rating.agent_ref} if by_agent else {}
        keys |= {"survey": Rating.survey_id} if by_survey else {}
    columns = [*keys.values(), Rating.scale, Rating.value]
    query = (
        select(*columns, Rating.suspected_scanner, func.count())
        .where(*scope.ratings(period))
        .group_by(*columns, Rating.suspected_scanner)
    )
    for *found, scale, value, suspected, count in db.session.execute(query):
        if suspected:
            counts.scanner += count
            continue
        counts.values[scale][value] += count
        _add(counts, dict(zip(keys, found, strict=True)), scale, value, count)
    # The second pass: answers by agent and survey, when the first was by day.
    others = {}
    if by_day:
        others |= {"agent": Rating.agent_ref} if by_agent else {}
        others |= {"survey": Rating.survey_id} if by_survey else {}
    if others:
        columns = [*others.values(), Rating.scale, Rating.value]
        query = (
            select(*columns, func.count())
            .where(*scope.ratings(period), COUNTS_BY_PERSON)
            .group_by(*columns)
        )
        for *found, scale, value, count in db.session.execute(query):
            _add(counts, dict(zip(others, found, strict=True)), scale, value, count)
    return counts


def _add(counts: RatingCounts, keys: dict[str, Any], scale: int, value: int, n: int) -> None:
    """Add `n` answers of `value` on `scale` to the groups `keys` names."""
    if "day" in keys:
        counts.days[scale][_as_date(keys["day"])][value] += n
    if "agent" in keys:
        counts.agents[scale][keys["agent"]][value] += n
    if "survey" in keys:
        counts.surveys[keys["survey"], scale][value] += n


def response_rate(scope: Scope, period: Period) -> ResponseRate:
    """Survey emails sent in `period` and how many of them a person rated (one query)."""
    # A rating's survey is its delivery's (copied when it is made): saying so lets the
    # database join only the scope's ratings instead of hashing every rating there is.
    answered = and_(Rating.delivery_id == Delivery.id, scope.surveys(Rating), COUNTS_BY_PERSON)
    query = (
        select(func.count(Delivery.id), func.count(Rating.id))
        .select_from(Delivery)
        .outerjoin(Rating, answered)
        .where(*scope.deliveries(period))
    )
    sent, rated = db.session.execute(query).one()
    return ResponseRate(sent=sent or 0, rated=rated or 0)


def latest_comments(
    metric: Metric,
    scope: Scope,
    period: Period,
    names: dict[str, str],
    limit: int = LATEST_COMMENTS,
) -> tuple[Comment, ...]:
    """The newest comments (by when they were written) on ratings given in `period`.

    The newest are found among the ratings alone and only they are joined with their
    ticket and survey: joined first, the database may look up the ticket of every comment
    of the scope before it keeps 20 of them."""
    written = func.coalesce(Rating.commented_at, Rating.created_at).label("written")
    newest = (
        select(
            Rating.id,
            Rating.survey_id,
            Rating.delivery_id,
            Rating.value,
            Rating.scale,
            Rating.comment,
            Rating.agent_ref,
            Rating.created_at,
            Rating.commented_at,
            written,
        )
        .where(*scope.ratings(period), COUNTS_BY_PERSON, Rating.comment != "")
        .order_by(written.desc(), Rating.id.desc())
        .limit(limit)
        .subquery()
    )
    query = (
        select(
            newest.c.id,
            newest.c.survey_id,
            Survey.name,
            newest.c.value,
            newest.c.scale,
            newest.c.comment,
            Delivery.ticket_id,
            newest.c.agent_ref,
            newest.c.created_at,
            newest.c.commented_at,
        )
        .join(Delivery, Delivery.id == newest.c.delivery_id)
        .join(Survey, Survey.id == newest.c.survey_id)
        .order_by(newest.c.written.desc(), newest.c.id.desc())
    )
    comments = []
    for row in db.session.execute(query):
        group = metric.group(row.value, row.scale) if row.scale in metric.scales else ""
        comments.append(
            Comment(
                rating_id=row.id,
                survey_id=row.survey_id,
                survey_name=row.name,
                value=row.value,
                scale=row.scale,
                group=group,
                text=row.comment,
                ticket_id=row.ticket_id,
                agent_ref=row.agent_ref,
                agent_name=_name(row.agent_ref, names),
                rated_at=row.created_at,
                commented_at=row.commented_at,
            )
        )
    return tuple(comments)


def build_report(
    metric: Metric,
    scope: Scope,
    period: Period,
    scales: Iterable[int] = (),
    *,
    today: date | None = None,
    by_agent: bool = True,
    surveys: Sequence[Survey] | None = None,
    granularity: str | None = None,
    trend: bool = True,
    comments: bool = True,
    response: ResponseRate | None = None,
) -> Report:
    """The report of `metric` over `scope` and `period`, in a fixed number of queries.

    `scales` are shown even without answers (a survey's own scale); scales found in the
    ratings are added. Scales the metric does not offer are left out (their values have
    no group). `by_agent` adds the per-agent scores; `surveys` (a metric report's) adds
    one score per survey and scale; `trend` the score per bucket, `comments` the latest
    comments (the API asks only for what it returns). `response`: the response rate when
    already counted (with a survey's funnel). Queries: the counts (one or two passes,
    `count_ratings`), the response rate, and when asked the comments and agent names.
    """
    today = today or datetime.now(UTC).date()
    counted = count_ratings(
        scope, period, by_day=trend, by_agent=by_agent, by_survey=surveys is not None
    )
    counts, by_day, agents = counted.values, counted.days, counted.agents
    names = agent_names() if by_agent or comments else {}
    shown = sorted(s for s in set(scales) | set(counts) if s in metric.scales)

    span = trend_span(period, {d for days in by_day.values() for d in days}, today)
    granularity = granularity or (granularity_for(*span) if span else "day")
    parts = []
    for scale in shown:
        buckets = ()
        if span:
            buckets = trend_buckets(metric, scale, by_day.get(scale, {}), span, granularity)
        agent_scores = sorted(
            (
                AgentScore(ref, _name(ref, names), metric.score_counts(values, scale))
                for ref, values in agents.get(scale, {}).items()
            ),
            key=lambda row: (-row.score.n, row.name.lower()),
        )
        parts.append(
            ScalePart(
                scale=scale,
                score=metric.score_counts(counts.get(scale, Counter()), scale),
                distribution=distribution(metric, scale, counts.get(scale, Counter())),
                trend=buckets,
                agents=tuple(agent_scores),
            )
        )

    survey_scores: list[SurveyScore] = []
    if surveys is not None:
        per_survey = counted.surveys
        for survey in surveys:
            found = sorted(scale for (sid, scale) in per_survey if sid == survey.id)
            for scale in found or [survey.scale]:
                if scale not in metric.scales:
                    continue
                score = metric.score_counts(per_survey.get((survey.id, scale), Counter()), scale)
                survey_scores.append(
                    SurveyScore(survey.id, survey.name, scale, survey.active, score)
                )

    return Report(
        metric=metric,
        scope=scope,
        period=period,
        granularity=granularity,
        parts=tuple(parts),
        response=response if response is not None else response_rate(scope, period),
        comments=latest_comments(metric, scope, period, names) if comments else (),
        scanner_clicks=counted.scanner,
        surveys=tuple(survey_scores),
    )


def metrics_rated(agent_ref: str, connection_id: int, period: Period) -> list[str]:
    """The metric keys an agent of `connection_id` has answers for in `period` (one query)."""
    query = (
        select(Survey.metric)
        .join(Rating, Rating.survey_id == Survey.id)
        .where(
            Rating.agent_ref == agent_ref,
            Survey.connection_id == connection_id,
            COUNTS_BY_PERSON,
            *period.where(Rating.created_at),
        )
        .distinct()
    )
    return sorted(db.session.execute(query).scalars())


#: The export's columns, in order.
EXPORT_COLUMNS = (
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
)


def _timestamp(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def rating_details() -> Select:
    """Ratings with their survey's name and metric and their ticket and address: what a
    rating export shows (the CSV here, the API's list and exports)."""
    return (
        select(
            Rating.id,
            Rating.survey_id,
            Survey.name,
            Survey.metric,
            Delivery.ticket_id,
            Delivery.requester_email,
            Rating.agent_ref,
            Rating.value,
            Rating.scale,
            Rating.comment,
            Rating.created_at,
            Rating.commented_at,
            Rating.suspected_scanner,
        )
        .join(Delivery, Delivery.id == Rating.delivery_id)
        .join(Survey, Survey.id == Rating.survey_id)
    )


def rating_rows(
    metric: Metric, scope: Scope, period: Period, batch: int = EXPORT_BATCH
) -> Iterator[tuple[Any, ...]]:
    """Every rating of `scope` given in `period`, oldest first, as `EXPORT_COLUMNS` rows.

    Rows are read `batch` at a time (a server-side cursor on PostgreSQL), so an export of
    any size streams in constant memory. Suspected scanner clicks are included, marked.
    """
    names = agent_names()
    query = (
        rating_details()
        .where(*scope.ratings(period))
        .order_by(Rating.created_at, Rating.id)
        .execution_options(yield_per=batch)
    )
    for row in db.session.execute(query):
        group = metric.group(row.value, row.scale) if row.scale in metric.scales else ""
        yield (
            row.id,
            row.survey_id,
            row.name,
            row.metric,
            row.ticket_id,
            row.requester_email or "",
            row.agent_ref or "",
            _name(row.agent_ref, names) if row.agent_ref else "",
            row.value,
            row.scale,
            group,
            row.comment or "",
            _timestamp(row.created_at),
            _timestamp(row.commented_at),
            "yes" if row.suspected_scanner else "no",
        )
