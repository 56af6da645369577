"""Settings: read from the environment, refused when unsafe for production."""

from pathlib import Path

import pytest

from hub.app import create_app
from hub.config import ConfigError
from hub.config import load_config
from hub.config import normalise_database_url
from hub.config import validate_config


def test_missing_secret_stops_production_start(tmp_path, monkeypatch):
    monkeypatch.delenv("HUB_SECRET_KEY", raising=False)
    monkeypatch.delenv("HUB_DEBUG", raising=False)
    with pytest.raises(ConfigError, match="HUB_SECRET_KEY is not set"):
        create_app({"INSTANCE_PATH": tmp_path})


@pytest.mark.parametrize("secret", ["dev", "change-me", "short-secret"])
def test_placeholder_or_short_secret_is_refused(secret):
    config = load_config(
        {"HUB_SECRET_KEY": secret, "HUB_BASE_URL": "https://s.example.com"}, Path("/tmp/x")
    )
    with pytest.raises(ConfigError, match="placeholder or too short"):
        validate_config(config)


def test_debug_mode_runs_without_a_secret():
    validate_config(load_config({"HUB_DEBUG": "1"}, Path("/tmp/x")))


def test_defaults_point_at_the_instance_folder():
    config = load_config({}, Path("/srv/hub/instance"))
    assert config["SQLALCHEMY_DATABASE_URI"] == "sqlite:////srv/hub/instance/surveyhub.db"
    assert config["REDIS_URL"] == "unix:///srv/hub/instance/redis/redis.sock"


@pytest.mark.parametrize(
    "given",
    ["postgres://u:p@db/hub", "postgresql://u:p@db/hub", "postgresql+psycopg://u:p@db/hub"],
)
def test_postgres_urls_use_psycopg3(given):
    assert normalise_database_url(given) == "postgresql+psycopg://u:p@db/hub"


def test_lists_are_comma_separated():
    config = load_config({"HUB_DISABLED_PLUGINS": "a, b,,c"}, Path("/tmp/x"))
    assert config["HUB_DISABLED_PLUGINS"] == ["a", "b", "c"]


def test_bad_redis_scheme_is_named():
    config = load_config({"HUB_DEBUG": "1", "REDIS_URL": "http://localhost"}, Path("/tmp/x"))
    with pytest.raises(ConfigError, match="REDIS_URL"):
        validate_config(config)


def production(**environ):
    return load_config({"HUB_SECRET_KEY": "a-long-enough-secret-key", **environ}, Path("/tmp/x"))


def test_production_needs_a_base_url():
    with pytest.raises(ConfigError, match="HUB_BASE_URL is not set"):
        validate_config(production())


def test_production_base_url_must_be_https_except_on_this_machine():
    with pytest.raises(ConfigError, match="must use https"):
        validate_config(production(HUB_BASE_URL="http://surveys.example.com"))
    validate_config(production(HUB_BASE_URL="https://surveys.example.com"))
    validate_config(production(HUB_BASE_URL="http://127.0.0.1:5000"))


def test_numbers_are_checked():
    with pytest.raises(ConfigError, match="HUB_SMTP_PORT must be a number"):
        load_config({"HUB_SMTP_PORT": "twenty-five"}, Path("/tmp/x"))


@pytest.mark.parametrize("mail_from", ["Acme <surveys@acme.example>", "surveys", "a b@x.com"])
def test_a_mail_from_that_is_not_a_bare_address_is_refused_at_start(mail_from):
    config = load_config({"HUB_DEBUG": "1", "HUB_MAIL_FROM": mail_from}, Path("/tmp/x"))
    with pytest.raises(ConfigError, match="must be a bare address"):
        validate_config(config)
    validate_config(
        load_config({"HUB_DEBUG": "1", "HUB_MAIL_FROM": "s@acme.example"}, Path("/tmp/x"))
    )
