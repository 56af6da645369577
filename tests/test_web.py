"""The web shell: health endpoints, first admin, sign-in, CSRF and friendly errors."""

from __future__ import annotations

import re

import pytest
from flask_migrate import upgrade

from hub.app import create_app
from hub.extensions import db
from hub.models import Role
from hub.models import User
from hub.models import UserStatus
from hub.web.auth import first_admin_url
from tests.conftest import free_port
from tests.conftest import make_config


def csrf_token(html: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)


def add_user(app, email="ann@example.com", password="correct horse battery", **fields):
    with app.app_context():
        user = User(email=email, name="Ann", **fields)
        user.set_password(password)
        db.session.add(user)
        db.session.commit()


def test_healthz(client):
    assert client.get("/healthz").json == {"status": "ok"}


def test_readyz_reports_database_and_redis(client, redis_client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"] == {"database": "ok", "redis": "ok"}


def test_web_keeps_serving_while_redis_is_away(tmp_path, database_url, caplog):
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(make_config(tmp_path, database_url, REDIS_URL=dead_redis))
    with app.app_context():
        upgrade()
    client = app.test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["database"] == "ok"
    assert response.json["checks"]["redis"] == "unavailable"
    assert "Cannot reach Redis at redis://127.0.0.1" in caplog.text
    assert client.get("/healthz").status_code == 200
    assert client.get("/login").status_code == 200


def test_readyz_names_an_unreachable_database(tmp_path, redis_client, caplog):
    url = f"postgresql+psycopg://nobody:hunter2@127.0.0.1:{free_port()}/nowhere"
    client = create_app(make_config(tmp_path, url)).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"] == {"database": "unavailable", "redis": "ok"}
    assert "127.0.0.1" not in response.text  # no internals for anonymous callers
    assert "Cannot reach the database at postgresql+psycopg://nobody:***@" in caplog.text
    assert "hunter2" not in caplog.text


def test_pages_need_sign_in(client):
    response = client.get("/")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_sign_in_page_says_how_to_make_the_first_admin(app, client):
    assert "surveyhub admin-link" in client.get("/login").text
    add_user(app, role=Role.ADMIN.value, status=UserStatus.ACTIVE.value)
    assert "surveyhub admin-link" not in client.get("/login").text


def test_sign_in_and_out(app, client):
    add_user(app, role=Role.ADMIN.value, status=UserStatus.ACTIVE.value)
    page = client.get("/login").text
    response = client.post(
        "/login",
        data={
            "email": "ANN@example.com",
            "password": "correct horse battery",
            "csrf_token": csrf_token(page),
        },
    )
    assert response.status_code == 302
    home = client.get("/")
    assert home.status_code == 200
    assert "Start NPS" in home.text and "/metrics/nps" in home.text
    client.post("/logout", data={"csrf_token": csrf_token(home.text)})
    assert client.get("/").status_code == 302


def test_wrong_password_and_archived_user_are_told_apart(app, client):
    add_user(app, status=UserStatus.ARCHIVED.value)
    page = client.get("/login").text
    wrong = client.post(
        "/login",
        data={"email": "ann@example.com", "password": "nope", "csrf_token": csrf_token(page)},
    )
    assert "do not match an account" in wrong.text
    archived = client.post(
        "/login",
        data={
            "email": "ann@example.com",
            "password": "correct horse battery",
            "csrf_token": csrf_token(page),
        },
    )
    assert "not active" in archived.text


def test_post_without_csrf_token_is_refused(app, client):
    add_user(app, status=UserStatus.ACTIVE.value)
    response = client.post(
        "/login", data={"email": "ann@example.com", "password": "correct horse battery"}
    )
    assert response.status_code == 400
    assert "could not be accepted" in response.text


def test_first_admin_link_works_once(app, client):
    with app.app_context():
        link = first_admin_url(app, "http://localhost")
    path = link.removeprefix("http://localhost")
    page = client.get(path)
    assert page.status_code == 200
    response = client.post(
        path,
        data={
            "name": "Ann Admin",
            "email": "ann@example.com",
            "password": "a long password",
            "confirm": "a long password",
            "csrf_token": csrf_token(page.text),
        },
    )
    assert response.status_code == 302
    with app.app_context():
        user = db.session.execute(db.select(User)).scalar_one()
        assert (user.role, user.status) == ("admin", "active")
    assert app.test_client().get(path).status_code == 410


@pytest.mark.parametrize("path", ["/setup/forged", "/setup/" + "x" * 40])
def test_tampered_first_admin_link_gets_a_friendly_page(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert "not valid" in response.text


def test_short_first_admin_password_is_explained(app, client):
    with app.app_context():
        path = first_admin_url(app, "")
    page = client.get(path).text
    response = client.post(
        path,
        data={
            "name": "A",
            "email": "a@example.com",
            "password": "short",
            "confirm": "short",
            "csrf_token": csrf_token(page),
        },
    )
    assert response.status_code == 200
    assert "at least 10 characters" in response.text


def test_unknown_page_is_friendly(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert "Page not found" in response.text


def test_server_error_is_friendly(tmp_path, database_url):
    from flask import Blueprint

    from hub import hookimpl

    bp = Blueprint("boom", __name__)

    @bp.get("/boom")
    def boom():
        raise RuntimeError("kaboom")

    class Plugin:
        @hookimpl
        def register_blueprints(self):
            return [bp]

    config = make_config(
        tmp_path,
        database_url,
        HUB_PLUGINS=[Plugin()],
        TESTING=False,
        HUB_BASE_URL="https://surveys.example.com",
    )
    app = create_app(config)
    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert "Something went wrong on our side" in response.text
    assert "kaboom" not in response.text


@pytest.mark.parametrize(
    "target",
    ["//evil.example", "/\\evil.example", "/\t/evil.example", "https://evil.example"],
)
def test_login_never_redirects_off_site(app, client, target):
    add_user(app, status=UserStatus.ACTIVE.value)
    page = client.get("/login").text
    response = client.post(
        "/login",
        query_string={"next": target},
        data={
            "email": "ann@example.com",
            "password": "correct horse battery",
            "csrf_token": csrf_token(page),
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_login_follows_a_local_next(app, client):
    add_user(app, status=UserStatus.ACTIVE.value)
    page = client.get("/login").text
    response = client.post(
        "/login",
        query_string={"next": "/outbox/"},
        data={
            "email": "ann@example.com",
            "password": "correct horse battery",
            "csrf_token": csrf_token(page),
        },
    )
    assert response.headers["Location"] == "/outbox/"
