"""Sign-in hardening: rate limits, timing, the first admin under concurrency, sign-out
that ends copied cookies."""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from werkzeug.serving import make_server

from hub.extensions import db
from hub.models import Role
from hub.models import User
from hub.models import UserStatus
from hub.web.auth import first_admin_url
from tests.conftest import free_port
from tests.test_web import add_user
from tests.test_web import csrf_token


def attempt(client, email: str, password: str):
    page = client.get("/login").text
    return client.post(
        "/login", data={"email": email, "password": password, "csrf_token": csrf_token(page)}
    )


def test_the_eleventh_wrong_password_within_a_minute_gets_429(app, client, redis_client):
    add_user(app, status=UserStatus.ACTIVE.value)
    for _ in range(10):
        assert attempt(client, "ann@example.com", "wrong guess").status_code == 200
    blocked = attempt(client, "ann@example.com", "wrong guess")
    assert blocked.status_code == 429
    assert "Too many sign-in attempts. Try again in a minute." in blocked.text
    assert int(blocked.headers["Retry-After"]) == 60
    # The right password does not get through either while the limit holds.
    assert attempt(client, "ann@example.com", "correct horse battery").status_code == 429


def test_guessing_other_addresses_from_one_client_is_limited_too(app, client, redis_client):
    statuses = [attempt(client, f"x{n}@example.com", "guess").status_code for n in range(11)]
    assert statuses[:10] == [200] * 10 and statuses[10] == 429


def test_known_and_unknown_emails_take_the_same_time(app, client, redis_client):
    add_user(app, status=UserStatus.ACTIVE.value)
    limiter = app.extensions["hub"].limiter
    limiter.enabled = False  # 40 attempts: not this test's subject
    try:

        def timed(email: str) -> float:
            page = client.get("/login").text
            start = time.perf_counter()
            client.post(
                "/login",
                data={"email": email, "password": "wrong", "csrf_token": csrf_token(page)},
            )
            return time.perf_counter() - start

        known = statistics.median(timed("ann@example.com") for _ in range(20))
        unknown = statistics.median(timed("nobody@example.com") for _ in range(20))
    finally:
        limiter.enabled = True
    assert max(known, unknown) / min(known, unknown) < 2, (known, unknown)


def test_a_session_cookie_saved_before_sign_out_is_refused_after(app, client):
    add_user(app, role=Role.ADMIN.value, status=UserStatus.ACTIVE.value)
    assert attempt(client, "ann@example.com", "correct horse battery").status_code == 302
    saved = client.get_cookie("session").value
    home = client.get("/")
    assert home.status_code == 200
    client.post("/logout", data={"csrf_token": csrf_token(home.text)})
    thief = app.test_client()
    thief.set_cookie("session", saved)
    assert thief.get("/").status_code == 302  # back to sign-in
    # Signing in again works, with a new cookie.
    assert attempt(client, "ann@example.com", "correct horse battery").status_code == 302
    assert client.get("/").status_code == 200


@pytest.fixture
def served(app):
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


def test_twelve_concurrent_first_admin_posts_create_one_admin(app, served, redis_client):
    with app.app_context():
        path = first_admin_url(app, "http://x").removeprefix("http://x")
    barrier = threading.Barrier(12)

    def create(n: int) -> int:
        with requests.Session() as browser:
            token = csrf_token(browser.get(f"{served}{path}", timeout=30).text)
            barrier.wait()
            return browser.post(
                f"{served}{path}",
                data={
                    "name": f"Admin {n}",
                    "email": f"admin{n}@example.com",
                    "password": "a long password",
                    "confirm": "a long password",
                    "csrf_token": token,
                },
                allow_redirects=False,
                timeout=30,
            ).status_code

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(create, range(12)))
    assert sorted(statuses) == [302] + [410] * 11
    with app.app_context():
        admins = db.session.execute(db.select(User).where(User.role == "admin")).scalars()
        assert len(admins.all()) == 1


def test_behind_a_proxy_each_client_and_each_address_is_counted(tmp_path, database_url):
    from flask_migrate import upgrade

    from hub.app import create_app
    from tests.conftest import make_config

    app = create_app(make_config(tmp_path, database_url, HUB_TRUSTED_PROXIES=1))
    with app.app_context():
        upgrade()
    client = app.test_client()

    def from_client(n: int, email: str) -> int:
        client.environ_base["HTTP_X_FORWARDED_FOR"] = f"203.0.113.{n}"
        return attempt(client, email, "guess").status_code

    # Eleven people behind the proxy, each with their own address: nobody is blocked.
    assert [from_client(n, f"p{n}@example.com") for n in range(11)] == [200] * 11
    # One address guessed from eleven places: the address's own limit holds.
    statuses = [from_client(100 + n, "target@example.com") for n in range(11)]
    assert statuses == [200] * 10 + [429]


def test_a_nul_in_the_sign_in_form_is_no_error(app, client):
    app.config["WTF_CSRF_ENABLED"] = False
    response = client.post("/login", data={"email": "a\x00@example.com", "password": "x\x00"})
    assert response.status_code == 200
    assert "do not match an account" in response.text


def test_the_session_cookie_is_secure_with_an_https_base_url(tmp_path, database_url):
    from hub.app import create_app
    from tests.conftest import make_config

    app = create_app(make_config(tmp_path, database_url, HUB_BASE_URL="https://surveys.example"))
    assert app.config["SESSION_COOKIE_SECURE"] is True
    with app.test_request_context():
        from flask import session

        session["x"] = 1
        response = app.make_response("ok")
        app.session_interface.save_session(app, session, response)
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_a_new_password_ends_the_old_sessions(app, client):
    add_user(app, role=Role.ADMIN.value, status=UserStatus.ACTIVE.value)
    assert attempt(client, "ann@example.com", "correct horse battery").status_code == 302
    assert client.get("/").status_code == 200
    with app.app_context():
        user = db.session.execute(db.select(User)).scalar_one()
        user.set_password("another long password")
        db.session.commit()
    assert client.get("/").status_code == 302
