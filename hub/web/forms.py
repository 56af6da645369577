"""HTML forms generated from marshmallow schemas: the connect form and trigger settings.

The schema that validates a value for the pipeline also draws its input and explains
its errors, so the form, the CLI and the pipeline never disagree. A field's
`metadata` may give `label`, `help`, `placeholder`, `secret` (a password input that is
never filled back) and `widget` ("textarea", "color", "select").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from marshmallow import Schema
from marshmallow import fields
from marshmallow import validate


@dataclass
class FieldView:
    """One input as the template draws it."""

    name: str
    label: str
    kind: str
    value: Any = ""
    help: str = ""
    placeholder: str = ""
    required: bool = False
    #: May be left empty (marked "optional" beside the label).
    optional: bool = False
    errors: list[str] = dataclass_field(default_factory=list)
    choices: list[tuple[str, str]] = dataclass_field(default_factory=list)


def _kind(field: fields.Field) -> str:
    widget = field.metadata.get("widget")
    if field.metadata.get("secret"):
        return "password"
    if widget:
        return widget
    if isinstance(field, fields.Boolean):
        return "checkbox"
    if isinstance(field, fields.Integer):
        return "number"
    if isinstance(field, fields.List):
        return "list"
    if isinstance(field, fields.Email):
        return "email"
    if _choices(field):
        return "select"
    return "text"


def _choices(field: fields.Field) -> list[tuple[str, str]]:
    labels = field.metadata.get("choices") or {}
    for validator in field.validators:
        if isinstance(validator, validate.OneOf):
            return [(str(c), str(labels.get(c, c))) for c in validator.choices]
    return []


def _messages(raw: Any) -> list[str]:
    """Marshmallow's messages for one field (a list, or a dict per list item) as sentences."""
    if isinstance(raw, Mapping):
        return [m for value in raw.values() for m in _messages(value)]
    if isinstance(raw, list | tuple):
        return [str(m) for m in raw]
    return [str(raw)]


def field_views(
    schema: Schema, values: Mapping[str, Any], errors: Mapping[str, Any] | None = None
) -> list[FieldView]:
    """Every field of `schema` with its current value and error messages."""
    errors = errors or {}
    views = []
    for name, field in schema.fields.items():
        if field.dump_only:
            continue
        kind = _kind(field)
        value = values.get(name)
        if kind == "password":
            value = ""  # secrets are never shown back, not even after a failed submit
        elif kind == "list":
            value = ", ".join(str(v) for v in value or ())
        elif kind != "checkbox":
            value = "" if value is None else str(value)
        views.append(
            FieldView(
                name=name,
                label=field.metadata.get("label") or name.replace("_", " ").capitalize(),
                kind=kind,
                value=value,
                help=field.metadata.get("help", ""),
                placeholder=field.metadata.get("placeholder", ""),
                required=field.required,
                optional=bool(field.allow_none) and not field.required,
                errors=_messages(errors[name]) if name in errors else [],
                choices=_choices(field),
            )
        )
    return views


def read_form(schema: Schema, form: Mapping[str, str]) -> dict[str, Any]:
    """The submitted form as input for `schema.load`: checkboxes as booleans, lists
    split on commas and lines, blank optional values as None, blank others left out (so
    a required field says it is required)."""
    data: dict[str, Any] = {}
    for name, field in schema.fields.items():
        if field.dump_only:
            continue
        kind = _kind(field)
        if kind == "checkbox":
            data[name] = name in form
            continue
        raw = form.get(name)
        if raw is None:
            continue
        raw = raw.strip()
        if kind == "list":
            data[name] = [
                part.strip() for part in raw.replace("\n", ",").split(",") if part.strip()
            ]
        elif raw:
            data[name] = raw
        elif field.allow_none:
            data[name] = None
    return data
