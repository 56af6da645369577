"""Deployment files: gunicorn.conf.py (real gunicorn), the proxy setting, the Procfile,
the systemd units in docs/deploy.md and compose.yaml."""

from __future__ import annotations

import os
import re
import runpy
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from hub.accesslog import redact_path
from hub.accesslog import redact_url
from hub.app import create_app
from hub.config import ConfigError
from hub.config import load_config
from hub.config import validate_config
from tests.conftest import ROOT
from tests.conftest import TEST_SECRET
from tests.conftest import free_port
from tests.conftest import make_config
from tests.conftest import redis_url

BIN = Path(sys.executable).parent
GUNICORN_CONF = ROOT / "gunicorn.conf.py"


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """What a real install exports (README, Production), on SQLite; nothing else of ours."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HUB_", "PYTEST_", "GUNICORN_", "PROMETHEUS_"))
        and key not in {"DATABASE_URL", "REDIS_URL", "WEB_CONCURRENCY", "PORT"}
    }
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        HUB_SECRET_KEY=secrets.token_urlsafe(48),
        DATABASE_URL=f"sqlite:///{tmp_path / 'hub.db'}",
        REDIS_URL=redis_url(),
        HUB_BASE_URL="https://surveys.example.com",
        HUB_INSTANCE_PATH=str(tmp_path / "instance"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def gunicorn_settings(env: dict[str, str]) -> dict[str, str]:
    """gunicorn's fully resolved settings, as it prints them from this folder."""
    done = subprocess.run(
        [BIN / "gunicorn", "--print-config", "wsgi:app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    settings = {}
    for line in done.stdout.splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            settings[name.strip()] = value.strip()
    return settings


# gunicorn.conf.py


@pytest.mark.slow
def test_gunicorn_loads_the_config_and_the_app(tmp_path):
    done = subprocess.run(
        [BIN / "gunicorn", "--check-config", "-c", GUNICORN_CONF, "wsgi:app"],
        cwd=ROOT,
        env=production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_gunicorn_picks_the_config_up_from_this_folder(tmp_path):
    settings = gunicorn_settings(production_env(tmp_path, WEB_CONCURRENCY="3"))
    assert settings["workers"] == "3"
    assert settings["bind"] == "['127.0.0.1:8000']"
    assert settings["timeout"] == "300"
    assert settings["graceful_timeout"] == "120"
    assert settings["max_requests"] == "10000"
    assert int(settings["max_requests_jitter"]) > 0
    assert "RedactingLogger" in settings["logger_class"]
    assert settings["accesslog"] == "-"
    assert settings.get("control_socket_disable", "True") == "True"


def load_conf(monkeypatch, **environ: str) -> dict:
    for name in ("WEB_CONCURRENCY", "HUB_BIND", "PORT", "HUB_WEB_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(GUNICORN_CONF))


def test_workers_follow_the_cores_unless_web_concurrency_says(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert load_conf(monkeypatch)["workers"] == 5
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert load_conf(monkeypatch)["workers"] == 12  # each worker holds database connections
    assert load_conf(monkeypatch, WEB_CONCURRENCY="7")["workers"] == 7
    with pytest.raises(SystemExit, match="WEB_CONCURRENCY must be a whole number"):
        load_conf(monkeypatch, WEB_CONCURRENCY="many")
    with pytest.raises(SystemExit, match="HUB_WEB_TIMEOUT must be at least 1"):
        load_conf(monkeypatch, HUB_WEB_TIMEOUT="0")


def test_the_address_comes_from_the_environment(monkeypatch):
    assert load_conf(monkeypatch)["bind"] == ["127.0.0.1:8000"]
    assert load_conf(monkeypatch, PORT="5001")["bind"] == ["0.0.0.0:5001"]
    assert load_conf(monkeypatch, PORT="5001", HUB_BIND="unix:/run/hub.sock")["bind"] == [
        "unix:/run/hub.sock"
    ]


def test_prometheus_files_of_a_stopped_worker_are_marked_dead(monkeypatch, tmp_path):
    conf = load_conf(monkeypatch)

    class Worker:
        pid = 4242

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    conf["child_exit"](None, Worker())  # nothing to do outside multiprocess mode
    try:
        # Imported before the variable is set: prometheus-client picks its mode on import.
        import prometheus_client  # noqa: F401
    except ImportError:
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        conf["child_exit"](None, Worker())  # no prometheus-client: nothing to do either
        return
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    (tmp_path / "gauge_liveall_4242.db").write_bytes(b"")
    (tmp_path / "counter_4242.db").write_bytes(b"")  # counts stay summed after it exits
    conf["child_exit"](None, Worker())
    assert not (tmp_path / "gauge_liveall_4242.db").exists()
    assert (tmp_path / "counter_4242.db").exists()


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("/r/abc.DEF-123_x/5", "/r/<token>/5"),
        ("/r/abc/-1", "/r/<token>/-1"),
        ("/r/abc/comment", "/r/<token>/comment"),
        ("//r//abc/thanks", "//r//<token>/thanks"),
        ("/u/abc", "/u/<token>"),
        ("/setup/abc", "/setup/<token>"),
        ("/invite/abc?next=/x", "/invite/<token>"),
        ("/surveys/3?token=abc", "/surveys/3"),
        ("/rr/abc", "/rr/abc"),
        ("/metrics/nps/report", "/metrics/nps/report"),
        ("", "-"),
    ],
)
def test_paths_are_shown_without_tokens_or_queries(path, shown):
    assert redact_path(path) == shown


def test_referrers_are_shown_without_tokens_or_queries():
    assert redact_url("https://s.example/r/abc/5?x=1") == "https://s.example/r/<token>/5"
    assert redact_url("https://s.example") == "https://s.example"
    assert redact_url(None) == "-"


@pytest.mark.slow
def test_the_access_log_shows_no_token_and_no_query(tmp_path):
    port = free_port()
    token = "tok" + secrets.token_urlsafe(24)
    out = open(tmp_path / "gunicorn.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [BIN / "gunicorn", "wsgi:app"],
        cwd=ROOT,
        env=production_env(
            tmp_path, HUB_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="1", HUB_PROXY_HOPS="1"
        ),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()
            try:
                requests.get(f"{base}/healthz", timeout=5)
                break
            except requests.RequestException:  # not listening yet, or the worker still boots
                assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()
                time.sleep(0.2)
        response = requests.get(
            f"{base}/r/{token}/5?x=secret",
            headers={
                "Referer": f"https://surveys.example.com/r/{token}/5?x=secret",
                "X-Forwarded-For": "203.0.113.9",
            },
            timeout=10,
        )
        assert response.status_code == 404  # not a real link; the log is what matters
        deadline = time.monotonic() + 10
        while "/r/<token>/5" not in (tmp_path / "gunicorn.log").read_text():
            assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()
            time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=30)
        out.close()
    log = (tmp_path / "gunicorn.log").read_text()
    line = next(line for line in log.splitlines() if "/r/<token>/5" in line)
    assert token not in log
    assert "secret" not in log and "x=" not in log
    assert '"GET /r/<token>/5 HTTP/1.1" 404' in line
    assert line.startswith("203.0.113.9 ")  # the client, as the proxy reported it


# The reverse proxy: HUB_PROXY_HOPS


def seen_by_the_app(tmp_path, headers: dict[str, str], **config) -> dict[str, str]:
    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", **config))

    @app.get("/_seen")
    def seen():
        from flask import request

        return {"remote": request.remote_addr, "scheme": request.scheme, "host": request.host}

    return app.test_client().get("/_seen", headers=headers).get_json()


FORWARDED = {
    "X-Forwarded-For": "198.51.100.1, 203.0.113.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "surveys.example.com",
}


def test_forwarded_headers_are_ignored_without_the_setting(tmp_path):
    assert seen_by_the_app(tmp_path, FORWARDED) == {
        "remote": "127.0.0.1",
        "scheme": "http",
        "host": "localhost",
    }


def test_one_proxy_hop_gives_the_client_scheme_and_host(tmp_path):
    assert seen_by_the_app(tmp_path, FORWARDED, HUB_PROXY_HOPS=1) == {
        "remote": "203.0.113.7",
        "scheme": "https",
        "host": "surveys.example.com",
    }


def test_two_hops_take_the_address_the_outer_proxy_saw(tmp_path):
    seen = seen_by_the_app(tmp_path, FORWARDED, HUB_PROXY_HOPS=2)
    assert seen["remote"] == "198.51.100.1"


def test_the_earlier_name_still_works(tmp_path):
    assert seen_by_the_app(tmp_path, FORWARDED, HUB_TRUSTED_PROXIES=1)["remote"] == "203.0.113.7"


def test_the_proxy_setting_is_read_from_the_environment():
    def hops(**environ: str) -> int:
        return load_config(environ, Path("/tmp/x"))["HUB_PROXY_HOPS"]

    assert hops() == 0
    assert hops(HUB_PROXY_HOPS="2") == 2
    assert hops(HUB_TRUSTED_PROXIES="1") == 1
    assert hops(HUB_PROXY_HOPS="2", HUB_TRUSTED_PROXIES="1") == 2
    with pytest.raises(ConfigError, match="HUB_PROXY_HOPS must be a number"):
        hops(HUB_PROXY_HOPS="one")
    config = load_config({"HUB_DEBUG": "1", "HUB_PROXY_HOPS": "-1"}, Path("/tmp/x"))
    with pytest.raises(ConfigError, match="HUB_PROXY_HOPS must be 0"):
        validate_config(config)


# Procfile and systemd units


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def check_command(argv: list[str], env: dict[str, str]) -> None:
    """`argv` names a program that exists and, for `surveyhub`, a command it has."""
    program = BIN / Path(argv[0]).name
    assert program.exists(), f"{argv[0]} is not installed"
    if program.name == "surveyhub":
        words = [word for word in argv[1:] if not word.startswith("-")]
        done = subprocess.run(
            [program, *words, "--help"], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{shlex.join(argv)}: {done.stdout}{done.stderr}"
    elif program.name == "gunicorn":
        assert "wsgi:app" in argv


@pytest.mark.slow
def test_the_procfile_names_commands_that_exist(tmp_path):
    entries = procfile()
    assert set(entries) == {"release", "web", "worker", "scheduler"}
    assert entries["release"] == "surveyhub db upgrade"
    assert entries["web"] == "gunicorn wsgi:app"
    env = production_env(tmp_path)
    for command in entries.values():
        check_command(shlex.split(command), env)


def unit_files() -> dict[str, str]:
    """The systemd units docs/deploy.md shows, by file name."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    found = re.findall(
        r"`/etc/systemd/system/([\w@.-]+)`(?:(?!```).)*?```ini\n(.*?)```", text, re.S
    )
    return dict(found)


@pytest.mark.slow
def test_the_systemd_units_run_commands_that_exist(tmp_path):
    units = unit_files()
    assert {
        "surveyhub-web.service",
        "surveyhub-worker@.service",
        "surveyhub-scheduler@.service",
    } <= set(units)
    env = production_env(tmp_path)
    for name, unit in units.items():
        starts = re.findall(r"^ExecStart=(.+)$", unit, re.M)
        if not starts:
            continue
        assert "EnvironmentFile=" in unit, name
        for line in starts:
            check_command(shlex.split(line.replace("%i", "1")), env)
    assert "ExecReload=/bin/kill -HUP $MAINPID" in units["surveyhub-web.service"]


# compose.yaml


def test_compose_runs_every_process_and_keeps_secrets_out():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker", "scheduler"}
    assert services["migrate"]["command"] == ["surveyhub", "db", "upgrade"]
    for name in ("web", "worker", "scheduler"):
        service = services[name]
        assert service["env_file"] == ".env"
        waits = service["depends_on"]["migrate"]["condition"]
        assert waits == "service_completed_successfully", name
    assert services["scheduler"]["deploy"]["replicas"] == 2
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])
    text = (ROOT / "compose.yaml").read_text()
    for secret in ("HUB_SECRET_KEY:", "HUB_SMTP_PASSWORD", "POSTGRES_PASSWORD: "):
        for line in text.splitlines():
            if secret in line:
                assert "${" in line, f"a secret written into compose.yaml: {line}"
    example = (ROOT / ".env.example").read_text()
    assert re.search(r"^HUB_SECRET_KEY=$", example, re.M)
    assert re.search(r"^POSTGRES_PASSWORD=$", example, re.M)
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def compose_command() -> list[str]:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        try:
            done = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if done.returncode == 0:
            return command
    pytest.skip("neither `docker compose` nor `docker-compose` is installed here")


def test_docker_compose_accepts_the_file(tmp_path):
    command = compose_command()
    for name in ("compose.yaml", "Dockerfile", ".dockerignore"):
        shutil.copy2(ROOT / name, tmp_path / name)
    env_file = (ROOT / ".env.example").read_text()
    env_file = env_file.replace("HUB_SECRET_KEY=\n", f"HUB_SECRET_KEY={TEST_SECRET}\n")
    (tmp_path / ".env").write_text(
        env_file.replace("POSTGRES_PASSWORD=\n", "POSTGRES_PASSWORD=pw\n")
    )
    done = subprocess.run(
        [*command, "-f", tmp_path / "compose.yaml", "config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "surveyhub:pw@postgres:5432/surveyhub" in done.stdout
    # Without the password compose refuses to start, naming what to set.
    (tmp_path / ".env").write_text(env_file)
    done = subprocess.run(
        [*command, "-f", tmp_path / "compose.yaml", "config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in done.stdout + done.stderr
