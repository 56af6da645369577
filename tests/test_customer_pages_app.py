"""The customers' pages run on a lean app of their own (hub.web.customers): none of the
admin stack's per-request work, the same database pool, config and translations, the
same headers, and behind the same reverse-proxy handling."""

from __future__ import annotations

from flask import request
from flask import session
from flask.sessions import NullSession

from hub.app import create_app
from hub.extensions import db
from hub.links import rating_token
from hub.web.customers import CustomerDispatcher
from tests.conftest import add_delivery
from tests.conftest import make_config


def _link(app) -> str:
    with app.app_context():
        delivery_id = add_delivery().id
    with app.test_request_context():
        return rating_token(delivery_id)


def test_the_admin_stack_does_not_run_for_customers(app, client):
    token = _link(app)
    hub_requests: list[str] = []
    app.before_request(lambda: hub_requests.append(request.path) and None)

    page = client.get(f"/r/{token}/9")
    assert page.status_code == 200
    assert hub_requests == []  # served by the customers' app
    assert "Set-Cookie" not in page.headers  # no session, no remember-me cookie
    with app.extensions["hub.customers"].test_request_context(f"/r/{token}/9"):
        assert isinstance(session, NullSession)  # no cookie read or signed

    assert client.get("/login").status_code == 200
    assert hub_requests == ["/login"]


def test_both_apps_share_one_pool_and_config(app):
    customers = app.extensions["hub.customers"]
    assert customers is not app
    assert customers.config is app.config
    with app.app_context():
        hub_engine = db.engine
    with customers.app_context():
        assert db.engine is hub_engine


def test_customers_pages_keep_their_headers(app, client):
    token = _link(app)
    page = client.get(f"/r/{token}/9")
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["X-Frame-Options"] == "DENY"
    policy = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy
    nonce = policy.split("'nonce-")[1].split("'")[0]
    assert f'nonce="{nonce}"' in page.get_data(as_text=True)  # the auto-submit script runs


def test_a_mistyped_link_gets_the_customers_page(app, client):
    for path in ("/r/", "/r/not-a-token", "/r/abc/def/ghi/jkl", "/u/"):
        page = client.get(path)
        assert page.status_code == 404, path
        assert "This link is not valid" in page.get_data(as_text=True), path
        assert page.headers["Cache-Control"] == "no-store", path
    assert client.post("/r/abc/thanks").status_code == 405


def test_the_customers_pages_sit_behind_the_proxy_handling(tmp_path):
    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", HUB_PROXY_HOPS=1))
    customers = app.extensions["hub.customers"]

    @customers.get("/r/_seen")
    def seen():
        return {"remote": request.remote_addr, "scheme": request.scheme}

    answer = app.test_client().get(
        "/r/_seen", headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    )
    assert answer.get_json() == {"remote": "203.0.113.7", "scheme": "https"}
    assert isinstance(app.wsgi_app.app, CustomerDispatcher)  # ProxyFix outermost
