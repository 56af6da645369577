"""The hub's own writes to tickets: recorded, then discounted from ticket activity.

A note or an attribute write bumps the ticket's update time in the helpdesk (and fires
its webhooks). A second survey, or one with a longer delay, would then see every rated
ticket as "updated within the delay". Each connector reports the update time its writes
left; while a ticket still shows that time, its last real activity is the one seen
before the hub first wrote to it.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from hub.extensions import db
from hub.helpdesk import Ticket
from hub.models import OwnWrite


def record_own_write(
    connection_id: int, ticket_id: str, updated_at: datetime | None, activity_at: datetime | None
) -> None:
    """Remember that our write left `ticket_id` updated at `updated_at` (and commit).

    `activity_at` is the ticket's last real activity before this write; the first one
    recorded is kept, since later writes see our own earlier ones.
    """
    if updated_at is None:
        return
    for _ in range(2):  # a concurrent first write of the same ticket may insert first
        row = db.session.execute(
            select(OwnWrite).where(
                OwnWrite.connection_id == connection_id, OwnWrite.ticket_id == ticket_id
            )
        ).scalar_one_or_none()
        if row is not None:
            row.updated_at = max(row.updated_at, updated_at)
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


def without_own_writes(connection_id: int, ticket: Ticket) -> Ticket:
    """`ticket` with its update time as it was before the hub's own writes, if those
    were the last thing that happened to it."""
    if ticket.updated_at is None:
        return ticket
    row = db.session.execute(
        select(OwnWrite.updated_at, OwnWrite.activity_at).where(
            OwnWrite.connection_id == connection_id, OwnWrite.ticket_id == ticket.id
        )
    ).first()
    if row is None or ticket.updated_at > row.updated_at:
        return ticket  # somebody else touched it after our last write: that counts
    return dataclasses.replace(ticket, updated_at=row.activity_at or ticket.resolved_at)
