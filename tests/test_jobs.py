"""RQ wiring with real worker and scheduler processes against a real Redis."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from flask import has_app_context
from rq.job import JobStatus

from hub.app import create_app
from hub.jobs import HEARTBEAT_KEY
from hub.jobs import HubJob
from hub.jobs import enqueue
from hub.jobs import heartbeat
from hub.scheduler import Scheduler
from tests.conftest import free_port
from tests.conftest import make_config

pytestmark = pytest.mark.slow


@pytest.fixture
def sqlite_app(tmp_path, redis_client):
    return create_app(make_config(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}"))


def worker_env(subprocess_env, app) -> dict:
    env = dict(subprocess_env)
    env["DATABASE_URL"] = app.config["SQLALCHEMY_DATABASE_URI"]
    env["REDIS_URL"] = app.config["REDIS_URL"]
    return env


def wait_for(predicate, timeout=20.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def run_burst_worker(app, subprocess_env, job) -> subprocess.CompletedProcess:
    """`surveyhub worker --burst` over the queued jobs; `job` must have finished."""
    result = subprocess.run(
        ["surveyhub", "worker", "--burst"],
        env=worker_env(subprocess_env, app),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED
    return result


def test_worker_process_runs_jobs_in_an_app_context(app, subprocess_env, redis_client):
    """The heartbeat job needs `current_app` and `db.session`, on SQLite and PostgreSQL."""
    with app.app_context():
        job = enqueue(heartbeat)
    result = run_burst_worker(app, subprocess_env, job)
    assert redis_client.get(HEARTBEAT_KEY).decode() == job.return_value()
    # Every log line written during the job names it.
    assert f"[job {job.id}] hub.jobs: heartbeat" in result.stderr + result.stdout


def test_work_horses_inherit_the_workers_objects_frozen(app, subprocess_env, redis_client):
    """The worker freezes its start-up objects before forking, so a work horse's garbage
    collections skip them (docs/performance.md: about 0.1 s per job otherwise)."""
    with app.app_context():
        job = enqueue("gc.get_freeze_count")
    run_burst_worker(app, subprocess_env, job)
    assert job.return_value() > 50_000  # the modules and the app: frozen, not a handful


def test_worker_refuses_to_start_without_redis(sqlite_app, subprocess_env):
    env = worker_env(subprocess_env, sqlite_app)
    env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    result = subprocess.run(
        ["surveyhub", "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "Error: Cannot reach Redis at redis://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_refuses_to_start_without_database(sqlite_app, subprocess_env):
    env = worker_env(subprocess_env, sqlite_app)
    env["DATABASE_URL"] = f"postgresql://hub:pw@127.0.0.1:{free_port()}/hub"
    result = subprocess.run(
        ["surveyhub", "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "Error: Cannot reach the database at postgresql+psycopg://hub:***@" in result.stderr
    assert "pw@" not in result.stderr


def test_job_fails_clearly_when_the_worker_app_is_missing(sqlite_app, redis_client, monkeypatch):
    monkeypatch.setattr(HubJob, "app", None)
    with sqlite_app.app_context():
        job = enqueue(heartbeat)
    with pytest.raises(RuntimeError, match="surveyhub worker"):
        job.perform()


def test_job_gets_its_own_app_context(sqlite_app, redis_client, monkeypatch):
    monkeypatch.setattr(HubJob, "app", sqlite_app)
    with sqlite_app.app_context():
        job = enqueue(heartbeat)
    assert not has_app_context()
    assert job.perform() == redis_client.get(HEARTBEAT_KEY).decode()
    assert not has_app_context()


def test_periodic_job_on_an_unknown_queue_is_refused(tmp_path, redis_client):
    from hub import hookimpl
    from hub.contracts import PeriodicJob
    from hub.registry import PluginError
    from hub.scheduler import periodic_jobs

    class Plugin:
        @hookimpl
        def register_periodic_jobs(self):
            return [PeriodicJob("nightly", heartbeat, interval=60, queue="nightly")]

    app = create_app(make_config(tmp_path, "sqlite://", HUB_PLUGINS=[Plugin()]))
    with pytest.raises(PluginError, match="queue 'nightly', which no worker listens to"):
        periodic_jobs(app)


def test_only_one_scheduler_leads(sqlite_app, redis_client):
    first, second = Scheduler(sqlite_app), Scheduler(sqlite_app)
    assert first.acquire()
    assert first.acquire()  # renewing its own lease
    assert not second.acquire()
    first.release()
    assert second.acquire()
    assert not first.acquire()


def test_periodic_job_is_enqueued_once_per_interval_and_never_twice(sqlite_app, redis_client):
    scheduler = Scheduler(sqlite_app)
    table = ["heartbeat", "scan-surveys", "reconcile", "reminders"]
    assert scheduler.run_due(now=1_000.0) == table
    assert scheduler.run_due(now=1_020.0) == []  # no interval is over (reconcile: 30 s)
    # Intervals over, but the first runs are still queued: no second copies.
    assert scheduler.run_due(now=5_000.0) == []
    # Housekeeping on the control queue, which every worker serves first; reminders send.
    assert redis_client.llen("rq:queue:control") == 3
    assert redis_client.llen("rq:queue:sends") == 1


def test_second_scheduler_process_waits_then_takes_over(
    sqlite_app, subprocess_env, redis_client, tmp_path
):
    env = worker_env(subprocess_env, sqlite_app)
    env["HUB_SCHEDULER_TICK"] = "0.2"
    first = subprocess.Popen(
        ["surveyhub", "scheduler"], env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert wait_for(lambda: redis_client.llen("rq:queue:control") >= 1)
        second_log = tmp_path / "second.log"
        with open(second_log, "w") as sink:
            second = subprocess.Popen(
                ["surveyhub", "scheduler"], env=env, stderr=sink, stdout=subprocess.DEVNULL
            )
        try:
            # Waited for by what it says, not for a fixed time: start-up takes longer on
            # a busy machine.
            assert wait_for(
                lambda: "Another scheduler is active" in second_log.read_text(), timeout=30
            )
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=20) == 0
            assert wait_for(lambda: "Took over" in second_log.read_text(), timeout=20)
            assert redis_client.get("surveyhub:scheduler:leader") is not None
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=20)
    finally:
        if first.poll() is None:
            first.kill()
    log = second_log.read_text()
    assert "Another scheduler is active; waiting to take over." in log
    assert "Took over as the active scheduler." in log


def test_a_standby_takes_over_when_the_leaders_lease_runs_out(sqlite_app, redis_client):
    from hub.scheduler import LEADER_KEY

    leader, standby = Scheduler(sqlite_app), Scheduler(sqlite_app)
    assert leader.acquire()
    assert not standby.acquire()
    # The leader dies without releasing: its lease runs out (shortened here).
    redis_client.pexpire(LEADER_KEY, 50)
    assert wait_for(lambda: redis_client.get(LEADER_KEY) is None, timeout=5)
    assert standby.acquire()
    assert not leader.acquire()  # a leader that comes back waits its turn


def test_a_periodic_job_whose_worker_died_is_enqueued_again(sqlite_app, redis_client):
    from rq.job import JobStatus
    from rq.registry import StartedJobRegistry

    from hub.jobs import HubJob

    scheduler = Scheduler(sqlite_app)
    assert "reconcile" in scheduler.run_due(now=1_000.0)
    # A worker took the job and was SIGKILLed: "started", its heartbeat long expired.
    job = HubJob.fetch("periodic-reconcile", connection=redis_client)
    redis_client.lrem("rq:queue:control", 0, job.id)
    job.set_status(JobStatus.STARTED)
    started = StartedJobRegistry("control", connection=redis_client)
    redis_client.zadd(started.key, {f"{job.id}:dead-execution": time.time() - 60})
    # The next reconcile is due; the dead copy does not hold it back for 10 minutes.
    assert "reconcile" in scheduler.run_due(now=1_035.0)
    assert job.get_status(refresh=True) == JobStatus.QUEUED
