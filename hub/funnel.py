"""The coverage funnel: which resolved tickets got a survey, and why the others did not.

Each stage, skip reason and not-sent state is defined here once, as a SQL condition
over deliveries outer-joined with their rating (`with_ratings`). The funnel counts rows
with these conditions and the deliveries log filters rows with the same ones, so a
count on the funnel always equals the rows its link lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import date
from datetime import datetime
from datetime import time
from datetime import timedelta

from sqlalchemy import ColumnElement
from sqlalchemy import Select
from sqlalchemy import and_
from sqlalchemy import case
from sqlalchemy import func
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import true

from hub.extensions import db
from hub.models import Delivery
from hub.models import DeliveryState
from hub.models import Rating
from hub.pipeline.decide import REASONS
from hub.reports import COUNTS_BY_PERSON
from hub.reports import Period
from hub.reports import ResponseRate

#: The stages in order; each one is the previous one narrowed by one more test.
STAGES = ("seen", "eligible", "sent", "opened", "rated", "commented")

#: One line per stage, shown next to its count.
STAGE_HELP = {
    "seen": "resolved tickets the hub found for this survey.",
    "eligible": "passed every rule; skipped tickets are listed below with their reason.",
    "sent": "the survey email went out.",
    "opened": "the customer opened the rating page (a mail scanner's prefetch counts too).",
    "rated": "the customer gave a score.",
    "commented": "the customer also wrote a comment.",
}

#: Eligible tickets whose email did not (or not yet) go out, in the order shown.
NOT_SENT_STATES = (
    DeliveryState.PENDING.value,
    DeliveryState.SENDING.value,
    DeliveryState.UNKNOWN.value,
    DeliveryState.FAILED.value,
    DeliveryState.CANCELLED.value,
)

#: What each not-sent state means for the ticket.
STATE_HELP = {
    DeliveryState.PENDING.value: "Waiting to be sent; the ticket is checked again first.",
    DeliveryState.SENDING.value: "Being sent right now.",
    DeliveryState.UNKNOWN.value: "Sending was interrupted; the email may have gone out, so "
    "it is never resent by itself.",
    DeliveryState.FAILED.value: "The mail server refused the email; the log shows its error.",
    DeliveryState.CANCELLED.value: "The survey was deactivated before the email went out.",
}


def with_ratings(query: Select, survey_id: int | None = None) -> Select:
    """`query` over deliveries, outer-joined with their rating (at most one each).

    With `survey_id` (a query over that survey's deliveries) only the survey's ratings
    are joined: the same rows, since a rating's survey is its delivery's, but the database
    need not read every other rating to find out."""
    joined = Rating.delivery_id == Delivery.id
    if survey_id is not None:
        joined = and_(joined, Rating.survey_id == survey_id)
    return query.outerjoin(Rating, joined)


def _stage_conditions() -> dict[str, ColumnElement[bool]]:
    sent = Delivery.state == DeliveryState.SENT.value
    rated = and_(sent, Rating.id.is_not(None))
    return {
        "seen": true(),
        "eligible": Delivery.state != DeliveryState.SKIPPED.value,
        "sent": sent,
        # A rating always counts as opened (the page records the open before the score),
        # so the funnel never narrows backwards, even for rows from before `opened_at`.
        "opened": and_(sent, Delivery.opened_at.is_not(None) | Rating.id.is_not(None)),
        "rated": rated,
        "commented": and_(rated, Rating.comment != ""),
    }


def stage_condition(stage: str) -> ColumnElement[bool]:
    """The condition a delivery (joined by `with_ratings`) meets at `stage` of the funnel."""
    return _stage_conditions()[stage]


def reason_condition(reason: str) -> ColumnElement[bool]:
    """Skipped for `reason` (one of `REASONS`)."""
    return and_(Delivery.state == DeliveryState.SKIPPED.value, Delivery.skip_reason == reason)


def state_condition(state: str) -> ColumnElement[bool]:
    """In delivery state `state`."""
    return Delivery.state == state


@dataclass(frozen=True)
class DayRange:
    """Whole UTC days, both ends included, on when the hub saw the ticket."""

    first: date | None = None
    last: date | None = None

    @classmethod
    def last_days(cls, days: int, today: date) -> DayRange:
        """The `days` days up to and including `today`."""
        if today.toordinal() <= days:  # the calendar's first days: from its start
            return cls(date.min, today)
        return cls(today - timedelta(days=days - 1), today)

    def condition(self) -> ColumnElement[bool]:
        """Deliveries the hub recorded within the range."""
        conditions = []
        if self.first is not None:
            conditions.append(Delivery.created_at >= datetime.combine(self.first, time(), UTC))
        if self.last is not None and self.last < date.max:  # the last day: no end
            end = datetime.combine(self.last + timedelta(days=1), time(), UTC)
            conditions.append(Delivery.created_at < end)
        return and_(true(), *conditions)

    def args(self) -> dict[str, str]:
        """The range as the query arguments `from` and `to` (for links)."""
        args = {}
        if self.first is not None:
            args["from"] = self.first.isoformat()
        if self.last is not None:
            args["to"] = self.last.isoformat()
        return args


@dataclass
class Funnel:
    """The counts of one survey over one range."""

    stages: dict[str, int]
    #: Skipped tickets per reason, every reason present, most frequent first (None: a
    #: skipped row without a reason).
    skipped: dict[str | None, int] = field(default_factory=dict)
    #: Eligible tickets that were not sent, per state, every state present.
    not_sent: dict[str, int] = field(default_factory=dict)
    #: With `count_funnel(..., response_in=period)`: the survey's response rate in that
    #: period, counted in the same pass.
    response: ResponseRate | None = None

    @property
    def seen(self) -> int:
        return self.stages["seen"]

    def share(self, count: int, of: int | None = None) -> float | None:
        """`count` as a percentage of `of` (default: seen), None when `of` is 0."""
        whole = self.seen if of is None else of
        return None if not whole else 100 * count / whole


def count_funnel(survey_id: int, days: DayRange, response_in: Period | None = None) -> Funnel:
    """Count every stage, skip reason and not-sent state in one pass over the survey's
    deliveries (grouped by state and reason, each stage a sum); with `response_in`, the
    response rate of that period (`hub.reports.response_rate`) in the same pass."""
    conditions = _stage_conditions()
    seen = days.condition()
    sums = [_sum(and_(seen, conditions[stage])) for stage in STAGES]
    where = seen
    if response_in is not None:
        # The response rate's rows: emails sent in the period, and those a person rated.
        sent = and_(Delivery.sent_at.is_not(None), *response_in.where(Delivery.sent_at))
        rated = and_(sent, Rating.id.is_not(None), COUNTS_BY_PERSON)
        sums += [_sum(sent), _sum(rated)]
        where = or_(seen, sent)
    groups = db.session.execute(
        with_ratings(
            select(Delivery.state, Delivery.skip_reason, *sums).select_from(Delivery), survey_id
        )
        .where(Delivery.survey_id == survey_id, where)
        .group_by(Delivery.state, Delivery.skip_reason)
    ).all()
    funnel = Funnel(stages=dict.fromkeys(STAGES, 0))
    skipped: dict[str | None, int] = dict.fromkeys(REASONS, 0)
    funnel.not_sent = dict.fromkeys(NOT_SENT_STATES, 0)
    response = [0, 0]
    for state, reason, *counts in groups:
        for stage, count in zip(STAGES, counts, strict=False):
            funnel.stages[stage] += int(count or 0)
        if response_in is not None:
            response[0] += int(counts[-2] or 0)
            response[1] += int(counts[-1] or 0)
        in_range = int(counts[0] or 0)  # seen: every delivery of the range
        if state == DeliveryState.SKIPPED.value:
            skipped[reason] = skipped.get(reason, 0) + in_range
        elif state != DeliveryState.SENT.value:
            funnel.not_sent[state] = funnel.not_sent.get(state, 0) + in_range
    if response_in is not None:
        funnel.response = ResponseRate(sent=response[0], rated=response[1])
    # The biggest reason first: it is the one worth acting on.
    order = list(REASONS)
    funnel.skipped = dict(
        sorted(
            skipped.items(),
            key=lambda item: (-item[1], order.index(item[0]) if item[0] in order else len(order)),
        )
    )
    return funnel


def _sum(condition: ColumnElement[bool]) -> ColumnElement[int]:
    """How many rows meet `condition`."""
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)
