"""Who may see what: admins see everything, agents only their own ratings."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import abort
from flask_login import current_user
from flask_login import login_required

from hub.access import agent_scope


def admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Sign-in required, and 403 for anyone who is not an admin."""

    @wraps(view)
    @login_required
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapper


def own_connection_id() -> int | None:
    """The helpdesk connection whose tickets the signed-in agent may see (None: all, for
    admins; one matching nothing for an agent without one): `hub.access.agent_scope`."""
    return agent_scope(current_user).connection_id


def own_agent_ref() -> str | None:
    """The helpdesk user id whose ratings the signed-in person may see (None: all)."""
    return agent_scope(current_user).agent_ref
