"""Placeholder: the deliveries pages (being written)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("deliveries", __name__)
