"""Meta-test: docs/api.md lists exactly the operations of the generated OpenAPI document,
and the API reference page shows each of them."""

from __future__ import annotations

import re

from hub.models import Role
from tests.conftest import ROOT
from tests.web.conftest import add_person
from tests.web.conftest import signed_in

METHODS = {"get", "post", "put", "patch", "delete"}


def operations(app) -> set[str]:
    spec = app.test_client().get("/api/v1/openapi.json").json
    return {
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method in item
        if method in METHODS
    }


def test_docs_list_every_operation_and_no_other(app):
    documented = set(
        re.findall(r"^\| `((?:GET|POST|PUT|PATCH|DELETE) /api/v1/[^`]*)` \|",
                   (ROOT / "docs" / "api.md").read_text(), re.M)
    )  # fmt: skip
    assert documented == operations(app)


def test_the_reference_page_shows_every_operation(app):
    page = signed_in(app, add_person(app, "admin@example.com", Role.ADMIN.value))
    html = page.get("/api-reference").text
    for operation in operations(app):
        assert f"<code>{operation}</code>" in html, operation
    # Nothing is loaded from elsewhere (no CDN): every src and stylesheet is the hub's.
    loaded = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert loaded and not [u for u in loaded if re.match(r"(?:https?:)?//", u)], loaded
