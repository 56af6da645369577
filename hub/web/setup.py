"""Placeholder while the set-up pages are written."""

from __future__ import annotations

from flask import Blueprint

from hub.web.access import admin_required

bp = Blueprint("setup", __name__)


@bp.get("/metrics/<key>")
@admin_required
def metric(key: str):
    return key


@bp.get("/agents")
@admin_required
def agents():
    return "agents"
