"""The pipeline's own hook implementations: it listens to webhook events like any plugin.

Ratings and comments are not handled here: their write-back is created in the same
transaction as the answer (`hub.ratings`), so a failing plugin can never lose one.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from hub import hookimpl
from hub.extensions import db
from hub.models import Survey
from hub.surveys import settings_of

#: How long after a ticket is due its webhook-requested scan starts: the helpdesk's
#: search index lags behind its writes by seconds (a ticket missed is found by the next
#: poll). The active scheduler starts due scans at its next tick.
DUE_MARGIN = timedelta(seconds=20)


@hookimpl
def ticket_resolved(connection, event):
    """Ask for a scan when the ticket becomes due; the active scheduler starts it then."""
    if event.resolved_at is None:
        return
    surveys = db.session.execute(
        select(Survey).where(Survey.connection_id == connection.id, Survey.active.is_(True))
    ).scalars()
    for survey in surveys:
        settings = settings_of(survey)
        due = event.resolved_at + timedelta(hours=settings["delay_hours"]) + DUE_MARGIN
        if survey.scan_due_at is None or due < survey.scan_due_at:
            survey.scan_due_at = due
    db.session.commit()
