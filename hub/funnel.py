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
from sqlalchemy import select
from sqlalchemy import true

from hub.extensions import db
from hub.models import Delivery
from hub.models import DeliveryState
from hub.models import Rating
from hub.pipeline.decide import REASONS

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


def with_ratings(query: Select) -> Select:
    """`query` over deliveries, outer-joined with their rating (at most one each)."""
    return query.outerjoin(Rating, Rating.delivery_id == Delivery.id)


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

    @property
    def seen(self) -> int:
        return self.stages["seen"]

    def share(self, count: int, of: int | None = None) -> float | None:
        """`count` as a percentage of `of` (default: seen), None when `of` is 0."""
        whole = self.seen if of is None else of
        return None if not whole else 100 * count / whole


def count_funnel(survey_id: int, days: DayRange) -> Funnel:
    """Count every stage, skip reason and not-sent state (two grouped queries)."""
    scope = (Delivery.survey_id == survey_id, days.condition())
    conditions = _stage_conditions()
    totals = db.session.execute(
        with_ratings(
            select(
                *(
                    func.coalesce(func.sum(case((conditions[stage], 1), else_=0)), 0)
                    for stage in STAGES
                )
            ).select_from(Delivery)
        ).where(*scope)
    ).one()
    funnel = Funnel(stages={stage: int(count) for stage, count in zip(STAGES, totals, strict=True)})
    groups = db.session.execute(
        select(Delivery.state, Delivery.skip_reason, func.count())
        .where(*scope, Delivery.state != DeliveryState.SENT.value)
        .group_by(Delivery.state, Delivery.skip_reason)
    ).all()
    skipped: dict[str | None, int] = dict.fromkeys(REASONS, 0)
    funnel.not_sent = dict.fromkeys(NOT_SENT_STATES, 0)
    for state, reason, count in groups:
        if state == DeliveryState.SKIPPED.value:
            skipped[reason] = skipped.get(reason, 0) + count
        else:
            funnel.not_sent[state] = funnel.not_sent.get(state, 0) + count
    # The biggest reason first: it is the one worth acting on.
    order = list(REASONS)
    funnel.skipped = dict(
        sorted(
            skipped.items(),
            key=lambda item: (-item[1], order.index(item[0]) if item[0] in order else len(order)),
        )
    )
    return funnel
