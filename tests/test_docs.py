"""Meta-tests: every hook is documented under its exact signature and has a test."""

from __future__ import annotations

import ast
import inspect

import pytest

from hub import hookspecs
from tests.conftest import ROOT

HOOKS = sorted(
    name
    for name, obj in vars(hookspecs).items()
    if callable(obj) and hasattr(obj, "surveyhub_spec")
)


def test_there_are_hooks_to_check():
    assert "register_metrics" in HOOKS and "register_helpdesks" in HOOKS


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented_under_its_signature(name):
    signature = f"{name}{inspect.signature(getattr(hookspecs, name))}"
    headings = [
        line[3:].strip()
        for line in (ROOT / "docs" / "hooks.md").read_text().splitlines()
        if line.startswith("## ")
    ]
    assert signature in headings


def _test_function_names() -> set[str]:
    names = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                names.add(node.name)
    return names


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_test(name):
    assert f"test_hook_{name}" in _test_function_names()


def test_every_hookspec_has_a_docstring():
    for name in HOOKS:
        assert inspect.getdoc(getattr(hookspecs, name)), name


CONNECTOR_METHODS = [
    "verify",
    "agents",
    "scan",
    "fetch_ticket",
    "fetch_tickets",
    "prepare",
    "write_back",
    "erase",
    "ticket_link",
]


@pytest.mark.parametrize("name", CONNECTOR_METHODS)
def test_connector_method_is_documented_under_its_signature(name):
    from hub.helpdesk import Helpdesk

    parameters = inspect.signature(getattr(Helpdesk, name)).parameters.values()
    shown = ", ".join(
        p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
        for p in parameters
        if p.name != "self"
    )
    assert f"`{name}({shown})`" in (ROOT / "docs" / "hooks.md").read_text()


def test_every_public_connector_method_is_checked():
    from hub.helpdesk import Helpdesk

    public = {
        name
        for name, value in vars(Helpdesk).items()
        if callable(value) and not name.startswith("_") and name != "secret_fields"
    }
    assert public == set(CONNECTOR_METHODS)
