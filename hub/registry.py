"""The plugin registry: loads `surveyhub` entry points and offers a typed view of them."""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import Distribution
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import click
import pluggy
from flask import Blueprint

from hub import hookspecs
from hub.contracts import Metric
from hub.contracts import PeriodicJob
from hub.helpdesk import Helpdesk

ENTRY_POINT_GROUP = "surveyhub"
log = logging.getLogger(__name__)


class PluginError(RuntimeError):
    """A plugin cannot be loaded or conflicts with another; the message names them."""


@dataclass(frozen=True)
class PluginInfo:
    """What `surveyhub plugins` prints about one plugin."""

    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...]


def _load_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise PluginError(
            f"Cannot import plugin module '{name}' (from HUB_PLUGINS): {type(exc).__name__}: {exc}"
        ) from exc


class Registry:
    """Typed facade over the pluggy manager; the rest of the hub never calls `pm.hook`."""

    def __init__(
        self, pm: pluggy.PluginManager, distributions: dict[str, Distribution] | None = None
    ) -> None:
        self._pm = pm
        self._distributions = distributions or {}

    @classmethod
    def load(cls, disabled: Iterable[str] = (), extra: Iterable[Any] = ()) -> Registry:
        """Load entry-point plugins (minus `disabled`) and `extra` plugin objects or modules.

        Raises `PluginError` for a misspelt hook or two plugins claiming one key.
        """
        pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        pm.add_hookspecs(hookspecs)
        blocked = set(disabled)
        distributions: dict[str, Distribution] = {}
        # The pipeline listens to the hub's events through the same hooks as any plugin.
        from hub.pipeline import events

        _register(pm, events, "hub.pipeline")
        for plugin in extra:
            module = _load_module(plugin) if isinstance(plugin, str) else plugin
            name = getattr(module, "__name__", None) or repr(module)
            if name not in blocked and not pm.is_registered(module):
                _register(pm, module, name)
        for entry_point in entry_points(group=ENTRY_POINT_GROUP):
            if entry_point.name in blocked or pm.get_plugin(entry_point.name):
                continue
            dist_name = entry_point.dist.name if entry_point.dist else "?"
            try:
                module = entry_point.load()
            except Exception as exc:
                raise PluginError(
                    f"Plugin '{entry_point.name}' (from {dist_name}) failed to load: "
                    f"{type(exc).__name__}: {exc}. Fix or uninstall it, or block it with "
                    f"HUB_DISABLED_PLUGINS={entry_point.name}."
                ) from exc
            _register(pm, module, entry_point.name)
            if entry_point.dist:
                distributions[entry_point.name] = entry_point.dist
        registry = cls(pm, distributions)
        registry._check_hook_names()
        # Resolve keys now so a conflict stops start-up instead of the first request.
        registry.helpdesks  # noqa: B018
        registry.metrics  # noqa: B018
        return registry

    def _check_hook_names(self) -> None:
        known = sorted(
            name for name, spec in vars(hookspecs).items() if hasattr(spec, "surveyhub_spec")
        )
        for plugin in self._pm.get_plugins():
            for attr in dir(plugin):
                impl = getattr(plugin, attr, None)
                if not hasattr(impl, "surveyhub_impl") or attr in known:
                    continue
                guess = difflib.get_close_matches(attr, known, n=1)
                hint = f" Did you mean '{guess[0]}'?" if guess else ""
                raise PluginError(
                    f"Plugin '{self._pm.get_name(plugin)}' implements '{attr}', which is not "
                    f"a SurveyHub hook.{hint} See docs/hooks.md for the list of hooks."
                )
        self._pm.check_pending()

    def registrations(self, hook_name: str) -> list[tuple[str, Any]]:
        """What each plugin registers through a `register_*` hook, as (plugin name, item)
        pairs in registration order (the Plugins page shows them)."""
        return self._collect(hook_name)

    def _collect(self, hook_name: str, *args: Any) -> list[tuple[str, Any]]:
        """Call a `register_*` hook and return (plugin name, item) pairs."""
        caller = getattr(self._pm.hook, hook_name)
        pairs = []
        for impl in caller.get_hookimpls():  # registration order
            for item in impl.function(*args) or ():
                pairs.append((impl.plugin_name, item))
        return pairs

    def _by_key(self, hook_name: str, kind: str, expected: type) -> dict[str, Any]:
        found: dict[str, Any] = {}
        owners: dict[str, str] = {}
        for plugin, item in self._collect(hook_name):
            if not (isinstance(item, expected) or _is_subclass(item, expected)):
                raise PluginError(
                    f"Plugin '{plugin}' returned {item!r} from {hook_name}; "
                    f"expected a {expected.__module__}.{expected.__name__}."
                )
            if item.key in found:
                raise PluginError(
                    f"Plugins '{owners[item.key]}' and '{plugin}' both register the {kind} "
                    f"'{item.key}'. Uninstall one, or block one with HUB_DISABLED_PLUGINS."
                )
            found[item.key] = item
            owners[item.key] = plugin
        return found

    @cached_property
    def helpdesks(self) -> dict[str, type[Helpdesk]]:
        """Connector classes by key, e.g. ``{"kustomer": KustomerHelpdesk}``."""
        return self._by_key("register_helpdesks", "helpdesk", Helpdesk)

    @cached_property
    def metrics(self) -> dict[str, Metric]:
        """Metrics by key, e.g. ``{"nps": Metric(...)}``."""
        return self._by_key("register_metrics", "metric", Metric)

    def blueprints(self) -> list[Blueprint]:
        """Blueprints that plugins add to the web app."""
        return [bp for _, bp in self._collect("register_blueprints")]

    def periodic_jobs(self) -> list[PeriodicJob]:
        """Periodic jobs that plugins add to the scheduler's table."""
        return [job for _, job in self._collect("register_periodic_jobs")]

    def add_commands(self, cli: click.Group) -> None:
        """Let plugins add their commands to the `surveyhub` group."""
        self._pm.hook.register_commands(cli=cli)

    def rating_received(self, rating: Any) -> None:
        """Tell plugins a score was given or changed."""
        self._notify("rating_received", rating=rating)

    def comment_received(self, rating: Any) -> None:
        """Tell plugins a comment was added or changed."""
        self._notify("comment_received", rating=rating)

    def ticket_resolved(self, connection: Any, event: Any) -> None:
        """Tell plugins (and the pipeline) a webhook reported a resolved ticket."""
        self._notify("ticket_resolved", connection=connection, event=event)

    def _notify(self, hook_name: str, **kwargs: Any) -> None:
        # Events report what already happened (a committed answer, a received webhook);
        # one failing plugin must not turn that into an error for the customer or the
        # helpdesk, so each failure is logged and skipped.
        for impl in getattr(self._pm.hook, hook_name).get_hookimpls():
            try:
                impl.function(*[kwargs[name] for name in impl.argnames])
            except Exception:
                log.exception("Plugin '%s' failed in %s", impl.plugin_name, hook_name)

    def plugins(self) -> list[PluginInfo]:
        """Every loaded plugin with its distribution, version and implemented hooks."""
        infos = []
        for plugin in self._pm.get_plugins():
            name = self._pm.get_name(plugin) or repr(plugin)
            dist = self._distributions.get(name)
            hooks = tuple(sorted(c.name for c in self._pm.get_hookcallers(plugin) or ()))
            infos.append(
                PluginInfo(
                    name=name,
                    distribution=dist.metadata["name"] if dist else "(not installed)",
                    version=dist.version if dist else "-",
                    hooks=hooks,
                )
            )
        return sorted(infos, key=lambda info: info.name)


def _register(pm: pluggy.PluginManager, plugin: Any, name: str) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"Plugin '{name}' is invalid: {exc}") from exc


def _is_subclass(item: Any, expected: type) -> bool:
    return isinstance(item, type) and issubclass(item, expected)
