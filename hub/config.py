"""Settings: every option the hub reads from the environment, in one place."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from email.headerregistry import Address
from ipaddress import ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: Secret keys that are known placeholders and must never protect a real install.
WEAK_SECRETS = frozenset({"", "dev", "secret", "change-me", "changeme", "replace-me", "test"})
MIN_SECRET_LENGTH = 16


class ConfigError(RuntimeError):
    """A setting is missing or wrong; the message names the variable to fix."""


def _bool(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def default_instance_path() -> Path:
    """The folder for local state (SQLite file, embedded Redis, generated secret)."""
    return Path(os.environ.get("HUB_INSTANCE_PATH") or Path.cwd() / "instance").resolve()


def load_or_create_secret(instance_path: Path) -> str:
    """The instance's generated secret key, created (mode 0600) on first start."""
    path = instance_path / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def normalise_database_url(url: str) -> str:
    """Point PostgreSQL URLs at the psycopg 3 driver, whatever spelling the user gave."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def embedded_redis_socket(instance_path: Path) -> Path:
    """Where `surveyhub run` puts the bundled redis-server's unix socket."""
    return instance_path / "redis" / "redis.sock"


def load_config(environ: Mapping[str, str], instance_path: Path) -> dict[str, Any]:
    """Build the Flask config mapping from environment variables."""
    database_url = environ.get("DATABASE_URL") or f"sqlite:///{instance_path / 'surveyhub.db'}"
    redis_url = environ.get("REDIS_URL") or f"unix://{embedded_redis_socket(instance_path)}"
    return {
        "SECRET_KEY": environ.get("HUB_SECRET_KEY", ""),
        "HUB_OLD_SECRET_KEYS": _list(environ.get("HUB_OLD_SECRET_KEYS")),
        "DEBUG": _bool(environ.get("HUB_DEBUG")),
        "SQLALCHEMY_DATABASE_URI": normalise_database_url(database_url),
        "REDIS_URL": redis_url,
        "HUB_BASE_URL": (environ.get("HUB_BASE_URL") or "").rstrip("/"),
        "HUB_DISABLED_PLUGINS": _list(environ.get("HUB_DISABLED_PLUGINS")),
        "HUB_PLUGINS": _list(environ.get("HUB_PLUGINS")),
        "HUB_ALLOWED_HELPDESK_URLS": _list(environ.get("HUB_ALLOWED_HELPDESK_URLS")),
        "HUB_SCHEDULER_TICK": _number(environ, "HUB_SCHEDULER_TICK", 5, float),
        # HUB_TRUSTED_PROXIES is the setting's earlier name, still read.
        "HUB_PROXY_HOPS": _number(
            environ,
            "HUB_PROXY_HOPS" if environ.get("HUB_PROXY_HOPS") else "HUB_TRUSTED_PROXIES",
            0,
            int,
        ),
        "HUB_SCAN_INTERVAL": _number(environ, "HUB_SCAN_INTERVAL", 300, float),
        "HUB_RECONCILE_INTERVAL": _number(environ, "HUB_RECONCILE_INTERVAL", 30, float),
        "HUB_SENDING_TIMEOUT": _number(environ, "HUB_SENDING_TIMEOUT", 600, float),
        "HUB_WRITEBACK_GRACE": _number(environ, "HUB_WRITEBACK_GRACE", 120, float),
        "HUB_STOP_TIMEOUT": _number(environ, "HUB_STOP_TIMEOUT", 15, float),
        "HUB_LOG_LEVEL": environ.get("HUB_LOG_LEVEL") or "INFO",
        "HUB_LOG_FORMAT": (environ.get("HUB_LOG_FORMAT") or "text").strip().lower(),
        "HUB_METRICS_TOKEN": environ.get("HUB_METRICS_TOKEN") or "",
        "HUB_METRICS_ALLOWED_IPS": _list(
            environ.get("HUB_METRICS_ALLOWED_IPS") or "127.0.0.0/8,::1"
        ),
        "HUB_API_RATE_LIMIT": environ.get("HUB_API_RATE_LIMIT") or "600 per minute",
        "SMTP_HOST": environ.get("HUB_SMTP_HOST") or "",
        "SMTP_PORT": _number(environ, "HUB_SMTP_PORT", 25, int),
        "SMTP_USER": environ.get("HUB_SMTP_USER") or "",
        "SMTP_PASSWORD": environ.get("HUB_SMTP_PASSWORD") or "",
        "SMTP_SECURITY": (environ.get("HUB_SMTP_SECURITY") or "none").lower(),
        "SMTP_CA_FILE": environ.get("HUB_SMTP_CA_FILE") or "",
        "MAIL_FROM": environ.get("HUB_MAIL_FROM") or "surveys@localhost",
        "OUTBOX_DIR": environ.get("HUB_OUTBOX_DIR") or "",
    }


def signing_keys(app: Any) -> list[str]:
    """Keys for itsdangerous: old ones still verify links, the current one (last) signs."""
    return [*app.config["HUB_OLD_SECRET_KEYS"], app.config["SECRET_KEY"]]


def _number(environ: Mapping[str, str], name: str, default: float, kind: type) -> Any:
    raw = environ.get(name)
    if not raw:
        return kind(default)
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}.") from None


def validate_config(config: Mapping[str, Any]) -> None:
    """Refuse settings that would run a real install insecurely or not at all."""
    production = not (config.get("DEBUG") or config.get("TESTING"))
    secret = config.get("SECRET_KEY") or ""
    if production and (secret.lower() in WEAK_SECRETS or len(secret) < MIN_SECRET_LENGTH):
        problem = "is not set" if not secret else "is a placeholder or too short"
        raise ConfigError(
            f"HUB_SECRET_KEY {problem}. Set HUB_SECRET_KEY to a random value of at least "
            f"{MIN_SECRET_LENGTH} characters, for example the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`, "
            "or set HUB_DEBUG=1 for local development."
        )
    base_url = config.get("HUB_BASE_URL") or ""
    if production:
        parts = urlsplit(base_url)
        local = parts.hostname in {"localhost", "127.0.0.1", "::1"}
        if not parts.hostname or parts.scheme not in {"http", "https"}:
            raise ConfigError(
                "HUB_BASE_URL is not set. Set it to the hub's public address, e.g. "
                "https://surveys.example.com: survey emails link to it."
            )
        if parts.scheme != "https" and not local:
            raise ConfigError(
                f"HUB_BASE_URL ({base_url}) must use https: mail providers require https "
                "unsubscribe links, and customers' answers travel through it."
            )
    mail_from = config.get("MAIL_FROM") or ""
    try:
        Address(addr_spec=mail_from)
        plain = "@" in mail_from
    except (ValueError, IndexError):
        plain = False
    if not plain:
        raise ConfigError(
            f"HUB_MAIL_FROM ({mail_from!r}) must be a bare address such as "
            "surveys@example.com; the sender's name is a survey setting."
        )
    if config.get("SMTP_SECURITY") not in {"none", "starttls", "ssl"}:
        raise ConfigError("HUB_SMTP_SECURITY must be one of: none, starttls, ssl.")
    if (config.get("HUB_PROXY_HOPS") or 0) < 0:
        raise ConfigError(
            "HUB_PROXY_HOPS must be 0 (no proxy) or the number of proxies in front of the hub."
        )
    if config.get("HUB_LOG_FORMAT", "text") not in {"text", "json"}:
        raise ConfigError("HUB_LOG_FORMAT must be text or json.")
    for network in config.get("HUB_METRICS_ALLOWED_IPS") or ():
        if network == "none":
            continue
        try:
            ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(
                f"HUB_METRICS_ALLOWED_IPS: {network!r} is not an address or network such as "
                "10.0.0.0/8 (or write none to require HUB_METRICS_TOKEN)."
            ) from None
    scheme = str(config.get("REDIS_URL", "")).split(":", 1)[0]
    if scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://.")
