"""The API reference page: the generated OpenAPI document drawn as HTML by the hub itself
(no script, no CDN), so it is always the document the running hub serves."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any

from flask import Blueprint
from flask import current_app
from flask import render_template
from flask_login import login_required

bp = Blueprint("api_reference", __name__)

METHODS = ("get", "post", "put", "patch", "delete")


@dataclass
class Property:
    """One field of a body or answer, with its type in words."""

    name: str
    type: str
    required: bool
    description: str


@dataclass
class Operation:
    """One method on one path, as the reference shows it."""

    method: str
    path: str
    summary: str
    parameters: list[dict[str, Any]]
    body: list[Property]
    answers: list[tuple[str, str, list[Property]]]
    writes: bool


@dataclass
class Section:
    """The operations of one resource (an OpenAPI tag)."""

    name: str
    title: str
    operations: list[Operation] = field(default_factory=list)


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _type(spec: dict[str, Any], node: dict[str, Any]) -> str:
    ref = node.get("$ref", "")
    if ref:
        return ref.rsplit("/", 1)[-1]
    node = _resolve(spec, node)
    kind = node.get("type", "object")
    if kind == "array":
        return f"list of {_type(spec, node.get('items', {}))}"
    if "enum" in node:
        return " | ".join(str(v) for v in node["enum"])
    if node.get("format"):
        kind = f"{kind} ({node['format']})"
    return kind + (" or null" if node.get("nullable") else "")


def _properties(spec: dict[str, Any], schema: dict[str, Any] | None) -> list[Property]:
    if not schema:
        return []
    schema = _resolve(spec, schema)
    if schema.get("type") == "array":
        schema = _resolve(spec, schema.get("items", {}))
    required = set(schema.get("required", []))
    return [
        Property(
            name, _type(spec, prop), name in required, _resolve(spec, prop).get("description", "")
        )
        for name, prop in schema.get("properties", {}).items()
    ]


def _content_schema(spec: dict[str, Any], holder: dict[str, Any]) -> tuple[str, dict | None]:
    content = _resolve(spec, holder).get("content", {})
    for media_type, media in content.items():
        return media_type, media.get("schema")
    return "", None


def reference(spec: dict[str, Any]) -> list[Section]:
    """The document's operations grouped by resource, in the document's order."""
    sections = {
        t["name"]: Section(t["name"], t.get("description") or t["name"])
        for t in spec.get("tags", [])
    }
    for path, item in spec.get("paths", {}).items():
        shared = item.get("parameters", [])
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            parameters = [_resolve(spec, p) for p in shared + operation.get("parameters", [])]
            body: list[Property] = []
            if "requestBody" in operation:
                body = _properties(spec, _content_schema(spec, operation["requestBody"])[1])
            answers = []
            for status, response in operation.get("responses", {}).items():
                if status == "default" or not status.startswith("2"):
                    continue
                media_type, schema = _content_schema(spec, response)
                answers.append((status, media_type, _properties(spec, schema)))
            tag = (operation.get("tags") or ["other"])[0]
            section = sections.setdefault(tag, Section(tag, tag))
            section.operations.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    summary=operation.get("summary", "") + "\n" + operation.get("description", ""),
                    parameters=parameters,
                    body=body,
                    answers=answers,
                    writes=method != "get",
                )
            )
    return [section for section in sections.values() if section.operations]


@bp.get("/api-reference")
@login_required
def index():
    """Every endpoint of /api/v1 with its parameters, body and answer."""
    api = current_app.extensions["hub_api"]
    spec = api.spec.to_dict()
    return render_template("api/reference.html", sections=reference(spec), spec=spec)
