"""A live Kustomer sandbox over real HTTP, and a connector pointed at it."""

from __future__ import annotations

import threading

import pytest
import requests
from werkzeug.serving import make_server

from hub.helpdesk import HelpdeskContext
from surveyhub_kustomer.client import KustomerClient
from surveyhub_kustomer.connector import Kustomer
from surveyhub_kustomer.sandbox.app import create_sandbox
from surveyhub_kustomer.sandbox.org import seed
from tests.conftest import free_port


class Sandbox:
    """A running sandbox: its URL, seeded data and control routes."""

    def __init__(self, seeded, url: str, app) -> None:
        self.seeded = seeded
        self.org = seeded.org
        self.url = url
        self.app = app

    def state(self) -> dict:
        return requests.get(f"{self.url}/__sandbox/state", timeout=5).json()

    def faults(self, **settings) -> None:
        requests.post(f"{self.url}/__sandbox/faults", json=settings, timeout=5).raise_for_status()

    def connector(self, api_key: str | None = None, redis=None, **client_options) -> Kustomer:
        context = HelpdeskContext(name="sandbox", redis=redis, allowed_urls=(self.url,))
        settings = {"url": self.url}
        secrets = {"api_key": api_key or self.seeded.api_key}
        kustomer = Kustomer(settings, secrets, context)
        if client_options:
            kustomer.client = KustomerClient(
                kustomer.base_url, secrets["api_key"], kustomer.client.budget, **client_options
            )
        return kustomer


def serve(app):
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture
def sandbox():
    seeded = seed(eligible=6)
    app = create_sandbox(seeded.org)
    server, url = serve(app)
    yield Sandbox(seeded, url, app)
    server.shutdown()
