"""The README, run as written: the Production block in a fresh virtualenv against
PostgreSQL and Redis, and CLI commands beside `make run` with nothing exported."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from hub.config import load_or_create_secret
from tests.conftest import ROOT
from tests.conftest import free_port
from tests.conftest import redis_url
from tests.test_web import csrf_token

pytestmark = pytest.mark.slow


def readme_block(heading: str) -> list[str]:
    """The lines of the first ```sh block after `heading` in the README."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HUB_", "PYTEST_", "VIRTUAL_ENV"))
        and key not in {"DATABASE_URL", "REDIS_URL", "PYTHONPATH"}
    }
    env.update(extra)
    return env


def test_the_production_block_runs_as_written(tmp_path, postgres_schema_url, redis_client):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("pyproject.toml", "README.md", "constraints.txt", "wsgi.py", "gunicorn.conf.py"):
        shutil.copy2(ROOT / name, checkout / name)
    for name in ("hub", "templates", "migrations", "plugins"):
        shutil.copytree(
            ROOT / name, checkout / name, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
        )
    port = free_port()
    venv = tmp_path / "venv"
    # Only the placeholders change: the values a reader would type.
    values = {
        "/opt/surveyhub": str(venv),
        "HUB_SECRET_KEY=...": f"HUB_SECRET_KEY={secrets.token_urlsafe(48)}",
        "DATABASE_URL=postgresql://...": f"DATABASE_URL={shlex.quote(postgres_schema_url)}",
        "REDIS_URL=redis://...": f"REDIS_URL={redis_url()}",
        "HUB_BASE_URL=https://...": f"HUB_BASE_URL=http://127.0.0.1:{port}",
    }
    lines = readme_block("## Production")
    script = ["set -e"]
    for line in lines:
        command = line.split("  #", 1)[0].rstrip()
        for placeholder, value in values.items():
            command = command.replace(placeholder, value)
        assert "..." not in command, f"a placeholder the test does not know: {line}"
        if command.split()[0] in {"gunicorn"} or command in {
            "surveyhub worker",
            "surveyhub scheduler",
        }:
            command += " &"  # each in its own terminal, as the README says
        script.append(command)
    script.append("wait")
    (tmp_path / "production.sh").write_text("\n".join(script) + "\n")
    log = open(tmp_path / "production.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        ["bash", str(tmp_path / "production.sh")],
        cwd=checkout,
        env=clean_env(GUNICORN_CMD_ARGS=f"--bind 127.0.0.1:{port}"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        link = None
        while time.monotonic() < deadline and process.poll() is None:
            output = (tmp_path / "production.log").read_text()
            link = link or next(iter(re.findall(rf"{re.escape(base)}/setup/\S+", output)), None)
            if link:
                try:
                    if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
            time.sleep(0.5)
        output = (tmp_path / "production.log").read_text()
        assert link, f"no admin link printed:\n{output[-3000:]}"
        with requests.Session() as browser:
            page = browser.get(link, timeout=10)
            assert page.status_code == 200, output[-3000:]
            created = browser.post(
                link,
                data={
                    "name": "Ann Admin",
                    "email": "ann@example.com",
                    "password": "a long password",
                    "confirm": "a long password",
                    "csrf_token": csrf_token(page.text),
                },
                allow_redirects=False,
                timeout=10,
            )
            assert created.status_code == 302, created.text[:500]
            assert browser.get(f"{base}/", timeout=10).status_code == 200
            style = browser.get(f"{base}/static/pico/pico.min.css", timeout=10)
            assert style.status_code == 200 and "Pico CSS" in style.text[:200]
        ready = requests.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["status"] == "ok"
        for _ in range(60):  # the worker ran the scheduler's heartbeat
            age = (
                requests.get(f"{base}/readyz", timeout=10)
                .json()
                .get("last_worker_heartbeat_seconds_ago")
            )
            if age is not None:
                break
            time.sleep(0.5)
        assert age is not None
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def test_cli_commands_beside_make_run_need_nothing_exported(tmp_path):
    """`make run` keeps its key, SQLite file and Redis in instance/; commands find them."""
    load_or_create_secret(tmp_path / "instance")
    surveyhub = str(Path(sys.executable).parent / "surveyhub")
    env = clean_env()

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [surveyhub, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )

    upgraded = cli("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    listed = cli("survey", "list")
    assert listed.returncode == 0, listed.stderr
    assert "No surveys yet" in listed.stdout
    assert (tmp_path / "instance" / "surveyhub.db").exists()


def test_a_production_setup_never_falls_back_to_the_development_key(tmp_path):
    load_or_create_secret(tmp_path / "instance")
    surveyhub = str(Path(sys.executable).parent / "surveyhub")
    env = clean_env(DATABASE_URL=f"sqlite:///{tmp_path / 'prod.db'}")
    result = subprocess.run(
        [surveyhub, "db", "upgrade"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "HUB_SECRET_KEY is not set" in result.stderr
