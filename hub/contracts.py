"""The types plugins hand to the hub: helpdesk connectors, metrics, periodic jobs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from typing import ClassVar

from marshmallow import Schema


class Helpdesk:
    """Base class of a helpdesk connector, built from a connection's settings and secrets.

    `settings_schema` drives the connect form; mark secret fields (API keys) with
    ``metadata={"secret": True}`` so the hub encrypts them and never shows them back.
    """

    key: ClassVar[str]
    title: ClassVar[str]
    settings_schema: ClassVar[type[Schema]]

    def __init__(self, settings: dict[str, Any], secrets: dict[str, Any]) -> None:
        self.settings = settings
        self.secrets = secrets

    @classmethod
    def secret_fields(cls) -> list[str]:
        """Names of the settings fields that are secrets."""
        fields = cls.settings_schema().fields
        return [name for name, field in fields.items() if field.metadata.get("secret")]


@dataclass(frozen=True)
class Metric:
    """A survey metric such as NPS: its scale choices and default question."""

    key: str
    title: str
    scales: tuple[int, ...]
    default_scale: int
    default_question: str


@dataclass(frozen=True)
class PeriodicJob:
    """A job the scheduler enqueues every `interval` seconds (one at a time)."""

    name: str
    func: Callable[[], Any]
    interval: float
    queue: str = "default"
