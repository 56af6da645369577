"""The plugin contract: every hook a SurveyHub plugin may implement (specs only)."""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("surveyhub")


@hookspec
def register_helpdesks():
    """Return a list of helpdesk connector classes (subclasses of `hub.helpdesk.Helpdesk`)."""


@hookspec
def register_metrics():
    """Return a list of `hub.contracts.Metric` objects."""


@hookspec
def register_blueprints():
    """Return a list of Flask blueprints to mount on the hub's web app."""


@hookspec
def register_periodic_jobs():
    """Return a list of `hub.contracts.PeriodicJob` entries for the scheduler."""


@hookspec
def register_commands(cli):
    """Add click commands to the `surveyhub` command group `cli`."""


@hookspec
def rating_received(rating):
    """A customer gave or changed a score; `rating` is the committed `hub.models.Rating`."""


@hookspec
def comment_received(rating):
    """A customer added or changed the comment on `rating` (committed)."""


@hookspec
def ticket_resolved(connection, event):
    """A helpdesk webhook reports a resolved ticket (`event`: a `hub.helpdesk.TicketEvent`)."""
