"""The Kustomer helpdesk plugin: installing it makes Kustomer appear in the app directory."""

from hub import hookimpl
from surveyhub_kustomer.connector import Kustomer


@hookimpl
def register_helpdesks():
    return [Kustomer]


@hookimpl
def register_blueprints():
    from surveyhub_kustomer.webhooks import bp

    return [bp]


@hookimpl
def register_commands(cli):
    from surveyhub_kustomer.sandbox.cli import add_command

    add_command(cli)
