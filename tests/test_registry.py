"""The plugin registry, and one test per hook (`test_hook_<name>`)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from flask import Blueprint
from marshmallow import Schema
from marshmallow import fields

from hub import hookimpl
from hub.app import create_app
from hub.contracts import PeriodicJob
from hub.helpdesk import Helpdesk
from hub.registry import PluginError
from hub.registry import Registry
from hub.scheduler import Scheduler
from hub.scheduler import periodic_jobs
from tests.conftest import make_config
from tests.plugins.simple_metric import make_metric


class FreshdeskSettings(Schema):
    domain = fields.String(required=True)
    token = fields.String(required=True, metadata={"secret": True})


class Freshdesk(Helpdesk):
    key = "freshdesk"
    title = "Freshdesk"
    settings_schema = FreshdeskSettings


def test_builtin_plugins_load_through_entry_points():
    registry = Registry.load()
    assert set(registry.metrics) == {"nps", "csat", "ces"}
    assert set(registry.helpdesks) == {"kustomer"}
    names = {info.name: info for info in registry.plugins()}
    assert names["metrics"].distribution == "surveyhub-metrics"
    assert names["kustomer"].hooks == (
        "register_blueprints",
        "register_commands",
        "register_helpdesks",
    )


def test_blocked_plugin_is_not_loaded():
    registry = Registry.load(disabled=["kustomer"])
    assert "kustomer" not in registry.helpdesks
    assert "kustomer" not in {info.name for info in registry.plugins()}


def test_duplicate_metric_key_names_both_plugins():
    with pytest.raises(PluginError) as info:
        Registry.load(extra=["tests.plugins.duplicate_nps_plugin"])
    message = str(info.value)
    assert "'metrics'" in message and "'tests.plugins.duplicate_nps_plugin'" in message
    assert "metric 'nps'" in message


def test_duplicate_key_stops_app_start(tmp_path):
    config = make_config(tmp_path, "sqlite://", HUB_PLUGINS=["tests.plugins.duplicate_nps_plugin"])
    with pytest.raises(PluginError, match="both register the metric 'nps'"):
        create_app(config)


def test_misspelt_hook_fails_loudly_with_a_suggestion():
    with pytest.raises(PluginError) as info:
        Registry.load(extra=["tests.plugins.misspelt_hook_plugin"])
    assert "implements 'register_metric'" in str(info.value)
    assert "Did you mean 'register_metrics'?" in str(info.value)


def test_missing_plugin_module_is_named():
    with pytest.raises(PluginError, match="no_such_plugin_module"):
        Registry.load(extra=["no_such_plugin_module"])


def test_wrong_return_type_is_reported():
    class Broken:
        @hookimpl
        def register_metrics(self):
            return ["nps"]

    with pytest.raises(PluginError, match="expected a hub.contracts.Metric"):
        Registry.load(extra=[Broken()])


def test_hook_register_helpdesks():
    class Plugin:
        @hookimpl
        def register_helpdesks(self):
            return [Freshdesk]

    registry = Registry.load(extra=[Plugin()])
    assert registry.helpdesks["freshdesk"] is Freshdesk
    assert registry.helpdesks["freshdesk"].secret_fields() == ["token"]
    assert "kustomer" in registry.helpdesks


def test_hook_register_metrics():
    class Plugin:
        @hookimpl
        def register_metrics(self):
            return [make_metric("effort", "Effort")]

    registry = Registry.load(extra=[Plugin()])
    assert registry.metrics["effort"].title == "Effort"
    assert {"nps", "csat", "ces"} <= set(registry.metrics)


def test_hook_register_blueprints(tmp_path):
    bp = Blueprint("hello_plugin", __name__)
    bp.add_url_rule("/hello-plugin", view_func=lambda: "hello from a plugin")

    class Plugin:
        @hookimpl
        def register_blueprints(self):
            return [bp]

    app = create_app(make_config(tmp_path, "sqlite://", HUB_PLUGINS=[Plugin()]))
    response = app.test_client().get("/hello-plugin")
    assert response.status_code == 200
    assert response.text == "hello from a plugin"


def record_plugin_tick() -> str:
    return "plugin tick"


def test_hook_register_periodic_jobs(tmp_path, redis_client):
    class Plugin:
        @hookimpl
        def register_periodic_jobs(self):
            return [PeriodicJob("plugin-tick", record_plugin_tick, interval=30)]

    app = create_app(make_config(tmp_path, "sqlite://", HUB_PLUGINS=[Plugin()]))
    assert "plugin-tick" in [job.name for job in periodic_jobs(app)]
    scheduler = Scheduler(app)
    assert "plugin-tick" in scheduler.run_due(now=1000.0)
    assert redis_client.exists("rq:job:periodic-plugin-tick")


def test_hook_register_commands():
    class Plugin:
        @hookimpl
        def register_commands(self, cli):
            @cli.command()
            def hello():
                click.echo("hello from a plugin command")

    group = click.Group("surveyhub")
    Registry.load(extra=[Plugin()]).add_commands(group)
    result = CliRunner().invoke(group, ["hello"])
    assert result.exit_code == 0
    assert result.output == "hello from a plugin command\n"
