"""gunicorn's access log without credentials: no query strings, no link tokens.

Survey links (`/r/<token>/<score>`), unsubscribe links (`/u/<token>`), the first admin's
link (`/setup/<token>`) and invitations (`/invite/<token>`) carry their credential in
the path, and any query string may carry one too. `gunicorn.conf.py` makes
`RedactingLogger` gunicorn's logger class, so every atom an access log format can name
shows such paths as `/r/<token>/5` and leaves the query out.
"""

from __future__ import annotations

import re
from typing import Any

from gunicorn.glogging import Logger

#: Paths whose second segment is a secret; a plugin's own would be added here.
TOKEN_PREFIXES = ("r", "u", "setup", "invite")
_PREFIXES = "|".join(map(re.escape, TOKEN_PREFIXES))
_TOKEN_PATH = re.compile(rf"^(/+(?:{_PREFIXES})/+)[^/?#]+")


def redact_path(path: str | None) -> str:
    """The path without its query string or fragment, a token segment shown as `<token>`."""
    if not path:
        return "-"
    path = path.split("?", 1)[0].split("#", 1)[0]
    return _TOKEN_PATH.sub(r"\1<token>", path)


def redact_url(url: str | None) -> str:
    """A full URL or a path (a Referer header), redacted like `redact_path`."""
    if not url or url == "-":
        return "-"
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*)(.*)$", url)
    if match:
        return match.group(1) + (redact_path(match.group(2)) if match.group(2) else "")
    return redact_path(url)


class RedactingLogger(Logger):
    """gunicorn's logger with every URL-bearing access log atom redacted."""

    def atoms(self, resp: Any, req: Any, environ: dict, request_time: Any) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        # PATH_INFO is the decoded path Flask routes on (`/%72/...` is `/r/...`).
        path = redact_path(environ.get("PATH_INFO"))
        atoms["U"] = path
        atoms["q"] = "-"
        atoms["r"] = f"{environ.get('REQUEST_METHOD')} {path} {environ.get('SERVER_PROTOCOL')}"
        for key in ("{raw_uri}e", "{path_info}e", "{request_uri}e"):
            if key in atoms:
                atoms[key] = path
        for key in ("{query_string}e", "{x-original-uri}i"):
            if key in atoms:
                atoms[key] = "-"
        atoms["f"] = redact_url(environ.get("HTTP_REFERER"))
        if "{referer}i" in atoms:
            atoms["{referer}i"] = atoms["f"]
        return atoms
