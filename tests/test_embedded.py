"""`surveyhub run`: bundled Redis, SQLite, web, worker and scheduler as one command."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import requests
from rq.job import JobStatus

from hub.app import create_app
from hub.config import embedded_redis_socket
from hub.jobs import enqueue
from hub.jobs import heartbeat
from tests.conftest import free_port

pytestmark = pytest.mark.slow


def start_run(env: dict, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        ["surveyhub", "run", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_ready(proc: subprocess.Popen, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"surveyhub run exited early:\n{proc.stdout.read()}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError("surveyhub run did not become ready")


def instance_app(instance: Path):
    """An app on the same SQLite file and bundled Redis as a running `surveyhub run`."""
    return create_app(
        {
            "INSTANCE_PATH": instance,
            "SECRET_KEY": (instance / "secret_key").read_text().strip(),
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{instance / 'surveyhub.db'}",
            "REDIS_URL": f"unix://{embedded_redis_socket(instance)}",
            "HUB_BASE_URL": "http://127.0.0.1",
        }
    )


def descendants(proc: subprocess.Popen) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children(recursive=True)


def all_gone(processes: list[psutil.Process]) -> bool:
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    return output


@pytest.fixture
def run_env(subprocess_env):
    env = dict(subprocess_env)
    env.pop("HUB_SECRET_KEY")  # the embedded run generates and keeps its own
    env.pop("HUB_BASE_URL")  # and uses its own address
    return env


def test_run_starts_everything_processes_a_job_and_stops_cleanly(run_env, tmp_path):
    port = free_port()
    proc = start_run(run_env, port)
    try:
        wait_ready(proc, port)
        children = descendants(proc)
        names = " ".join(" ".join(child.cmdline()) for child in children)
        assert "redis-server" in names
        for role in ("web", "worker", "scheduler", "smtp-sink"):
            assert f"-m hub {role}" in names

        instance = Path(run_env["HUB_INSTANCE_PATH"])
        app = instance_app(instance)
        with app.app_context():
            job = enqueue(heartbeat)
        deadline = time.monotonic() + 30
        while job.get_status() != JobStatus.FINISHED and time.monotonic() < deadline:
            time.sleep(0.1)
        assert job.get_status() == JobStatus.FINISHED
    finally:
        output = stop(proc)
    assert proc.returncode == 0, output
    assert all_gone(children), [c for c in children if c.is_running()]
    link = re.search(r"(http://127\.0\.0\.1:\d+/setup/\S+)", output)
    assert link, output
    assert (instance / "surveyhub.db").exists()
    assert oct((instance / "secret_key").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_stopping_during_a_long_job_leaves_no_process(run_env, stop_signal):
    port = free_port()
    proc = start_run(dict(run_env, HUB_STOP_TIMEOUT="1"), port)
    try:
        wait_ready(proc, port)
        instance = Path(run_env["HUB_INSTANCE_PATH"])
        app = instance_app(instance)
        with app.app_context():
            job = enqueue("time.sleep", 300, job_timeout=600)
        deadline = time.monotonic() + 30
        while job.get_status() != JobStatus.STARTED and time.monotonic() < deadline:
            time.sleep(0.1)
        assert job.get_status() == JobStatus.STARTED
        everything = descendants(proc)
        worker = next(c for c in everything if "-m hub worker" in " ".join(c.cmdline()))
        assert worker.children(), "the job's work horse should be running"
        proc.send_signal(stop_signal)
        proc.wait(timeout=60)
    finally:
        stop(proc)
    assert all_gone(everything), [p.cmdline() for p in everything if p.is_running()]


def test_first_admin_link_printed_by_run_opens_the_form(run_env):
    port = free_port()
    proc = start_run(run_env, port)
    try:
        wait_ready(proc, port)
        output = ""
        while "/setup/" not in output:
            output += proc.stdout.readline()
        link = re.search(r"(http://\S+/setup/\S+)", output).group(1)
        page = requests.get(link, timeout=5)
        assert page.status_code == 200
        assert "Create the first admin" in page.text
    finally:
        stop(proc)


def test_crashed_child_is_reported_and_everything_stops(run_env):
    port = free_port()
    proc = start_run(run_env, port)
    try:
        wait_ready(proc, port)
        children = descendants(proc)
        worker = next(c for c in children if "-m hub worker" in " ".join(c.cmdline()))
        worker.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        output = stop(proc)
    assert proc.returncode == 1
    assert "the worker process stopped unexpectedly" in output
    assert all_gone(children)


def processes_using(folder: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if folder in " ".join(process.info["cmdline"] or ()):
            found.append(process)
    return found


def test_run_with_unreachable_database_says_so_and_leaves_nothing(run_env):
    env = dict(run_env, DATABASE_URL=f"postgresql://hub:pw@127.0.0.1:{free_port()}/hub")
    proc = start_run(env, free_port())
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "Error: Cannot reach the database at postgresql+psycopg://hub:***@" in output
    assert "Started the bundled Redis" in output
    assert processes_using(env["HUB_INSTANCE_PATH"]) == []  # the bundled Redis was stopped


def test_run_with_unreachable_redis_says_so(run_env):
    env = dict(run_env, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    proc = start_run(env, free_port())
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "Error: Cannot reach Redis at redis://127.0.0.1:" in output
    assert "Traceback" not in output
