"""The hub's own writes to tickets: recorded, then discounted from ticket activity.

A note or an attribute write bumps the ticket's update time in the helpdesk (and fires
its webhooks). A second survey, or one with a longer delay, would then see every rated
ticket as "updated within the delay". Each connector reports the update time its writes
left; while a ticket still shows that time, its last real activity is the one seen
before the hub first wrote to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import case
from sqlalchemy import literal
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from hub.extensions import db
from hub.helpdesk import Ticket
from hub.models import OwnWrite

#: Ticket ids per `IN (...)` list: well under every database's parameter limit.
_IN_CHUNK = 500


def record_own_write(
    connection_id: int, ticket_id: str, updated_at: datetime | None, activity_at: datetime | None
) -> None:
    """Remember that our write left `ticket_id` updated at `updated_at` (and commit).

    `activity_at` is the ticket's last real activity seen before this write; the latest
    one known is kept. Both only move forward, in one statement, so concurrent
    write-backs of one ticket (several surveys) never store an older time.
    """
    if updated_at is None:
        return
    for _ in range(2):  # a concurrent first write of the same ticket may insert first
        changed = db.session.execute(
            update(OwnWrite)
            .where(OwnWrite.connection_id == connection_id, OwnWrite.ticket_id == ticket_id)
            .values(
                updated_at=_later_of(OwnWrite.updated_at, updated_at),
                activity_at=_later_of(OwnWrite.activity_at, activity_at),
            )
        )
        if changed.rowcount:
            db.session.commit()
            return
        db.session.add(
            OwnWrite(
                connection_id=connection_id,
                ticket_id=ticket_id,
                updated_at=updated_at,
                activity_at=activity_at,
            )
        )
        try:
            db.session.commit()
            return
        except IntegrityError:
            db.session.rollback()


def _later_of(column, value: datetime | None):
    """SQL for the later of `column` and `value` (NULL counts as earliest)."""
    if value is None:
        return column
    value = literal(value, type_=column.type)  # stored the way the column stores times
    return case((column.is_(None), value), (column < value, value), else_=column)


def own_writes_of(connection_id: int, ticket_ids: Iterable[str]) -> dict[str, Any]:
    """What the hub's writes left on these tickets (rows with `updated_at` and
    `activity_at`), by ticket id: one query for a batch of tickets."""
    ids = sorted(set(ticket_ids))
    found: dict[str, Any] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        rows = db.session.execute(
            select(OwnWrite.ticket_id, OwnWrite.updated_at, OwnWrite.activity_at).where(
                OwnWrite.connection_id == connection_id,
                OwnWrite.ticket_id.in_(ids[start : start + _IN_CHUNK]),
            )
        )
        found.update((row.ticket_id, row) for row in rows)
    return found


def without_own_writes(
    connection_id: int, ticket: Ticket, remember: bool = False, known: dict | None = None
) -> Ticket:
    """`ticket` with its update time as it was before the hub's own writes, if those
    were the last thing that happened to it.

    With `remember`, real activity seen after our last write is recorded, so a later
    write of ours cannot hide it. `known` is what `own_writes_of` read for a batch of
    tickets holding this one (else it is read now).
    """
    if ticket.updated_at is None:
        return ticket
    if known is None:
        known = own_writes_of(connection_id, [ticket.id])
    row = known.get(ticket.id)
    if row is None:
        return ticket
    if ticket.updated_at > row.updated_at:
        # Somebody else touched it after our last write: that counts.
        if remember:
            record_own_write(connection_id, ticket.id, row.updated_at, ticket.updated_at)
        return ticket
    return dataclasses.replace(ticket, updated_at=row.activity_at or ticket.resolved_at)
