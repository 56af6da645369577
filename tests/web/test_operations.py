"""The Operations and Plugins pages against real Redis, real RQ and a live Kustomer sandbox."""

from __future__ import annotations

import html
import re
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from importlib.metadata import version

import pytest
from flask import session
from flask import url_for
from flask_wtf.csrf import generate_csrf
from rq import SimpleWorker
from rq import Worker
from rq.registry import FailedJobRegistry
from rq.utils import utcformat

from hub.app import create_app
from hub.extensions import db
from hub.jobs import HubJob
from hub.jobs import get_queue
from hub.jobs import heartbeat
from hub.jobs import redis_connection
from hub.models import Connection
from hub.models import Role
from hub.models import Survey
from hub.scheduler import Scheduler
from surveyhub_kustomer.sandbox.org import ALL_ROLES
from surveyhub_kustomer.sandbox.org import ApiKey
from tests.conftest import free_port
from tests.conftest import make_config
from tests.kustomer.conftest import sandbox  # noqa: F401  (a fixture)
from tests.web.conftest import add_person
from tests.web.conftest import csrf_of
from tests.web.conftest import signed_in


def explode() -> None:
    """A job that fails the way a broken helpdesk call does."""
    raise RuntimeError("boom: the helpdesk said no")


def plain(markup: str) -> str:
    """Markup as the words a reader sees: tags removed, whitespace collapsed."""
    words = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())
    return re.sub(r"\( ", "(", re.sub(r" ([.,;:)])", r"\1", words))


def text_of(response) -> str:
    """The page's text, for phrase checks."""
    return plain(response.get_data(as_text=True))


def row(response, row_id: str) -> str:
    """The text of the table row with `id="row_id"`."""
    page = response.get_data(as_text=True)
    match = re.search(rf'<tr id="{re.escape(row_id)}">(.*?)</tr>', page, re.S)
    assert match, f"no row {row_id}"
    return plain(match.group(1))


def section(response, section_id: str) -> str:
    """The text of the page's section headed by `id="section_id"`."""
    page = response.get_data(as_text=True)
    match = re.search(rf'<section[^>]*aria-labelledby="{section_id}">(.*?)</section>', page, re.S)
    assert match, f"no section {section_id}"
    return plain(match.group(1))


def csrf_for(app, client) -> str:
    """A valid CSRF token for `client`'s session, without needing a page that has a form."""
    with app.test_request_context():
        token = generate_csrf()
        raw = session["csrf_token"]
    with client.session_transaction() as stored_session:
        stored_session["csrf_token"] = raw
    return token


def run_burst_worker(app, *queues: str) -> None:
    """Run every job on `queues` in this process, as `surveyhub worker --burst` would."""
    previous = HubJob.app
    HubJob.app = app
    try:
        with app.app_context():
            connection = redis_connection()
            worker = SimpleWorker(
                [get_queue(name) for name in queues], connection=connection, job_class=HubJob
            )
            worker.work(burst=True)
    finally:
        HubJob.app = previous


# -- Queues, workers, scheduler -----------------------------------------------------------


def test_queue_depths_match_what_was_enqueued(app, admin, redis_client):
    with app.app_context():
        for _ in range(3):
            get_queue("sends").enqueue(heartbeat)
        get_queue("scans").enqueue(heartbeat)

    page = admin.get("/operations")

    assert page.status_code == 200
    # queue, queued, running, failed, scheduled
    assert row(page, "queue-sends") == "sends 3 0 0 0"
    assert row(page, "queue-scans") == "scans 1 0 0 0"
    assert row(page, "queue-write-backs") == "write-backs 0 0 0 0"


def test_a_live_worker_shows_as_alive_and_a_silent_one_does_not(app, admin, redis_client):
    with app.app_context():
        connection = redis_connection()
        queues = [get_queue("sends"), get_queue("scans")]
        live = Worker(queues, connection=connection, name="live-worker")
        silent = Worker(queues, connection=connection, name="silent-worker")
        live.register_birth()
        silent.register_birth()
        # Its last heartbeat is older than a worker's TTL: it died without saying so.
        stale = datetime.now(UTC) - timedelta(minutes=30)
        connection.hset(silent.key, "last_heartbeat", utcformat(stale))
    try:
        page = admin.get("/operations")
        workers = section(page, "workers")
        assert re.search(r"live-worker alive \S+ sends, scans", workers), workers
        assert re.search(r"silent-worker no heartbeat", workers), workers
        assert "No worker is running" not in workers
    finally:
        live.register_death()
        silent.register_death()

    workers = section(admin.get("/operations"), "workers")
    assert "No worker is running: start one with surveyhub worker (or make run)" in workers


def test_the_scheduler_shows_while_it_holds_the_lease(app, admin, redis_client):
    scheduler = Scheduler(app)
    assert scheduler.acquire()
    enqueued = scheduler.run_due()

    page = admin.get("/operations")
    text = section(page, "scheduler")
    assert "running A scheduler holds the leader lease" in text
    for name in enqueued:
        assert re.search(rf"{name} \d{{4}}-\d\d-\d\d \d\d:\d\d UTC", text), text
    # What it enqueued is waiting in the queues.
    assert row(page, "queue-control").startswith("control 3 ")
    assert row(page, "queue-sends").startswith("sends 1 ")

    scheduler.release()
    text = section(admin.get("/operations"), "scheduler")
    assert "not running No scheduler is running" in text
    assert "surveyhub scheduler" in text


def test_surveys_show_their_last_scan(app, admin):
    with app.app_context():
        connection = Connection(helpdesk="kustomer", name="Acme", settings={})
        scanned = datetime(2026, 3, 4, 5, 6, tzinfo=UTC)
        failing = Survey(
            connection=connection,
            metric="nps",
            scale=11,
            name="Support NPS",
            active=True,
            last_scan_at=scanned,
            last_scan_error="Kustomer refused the API key (401).",
        )
        idle = Survey(connection=connection, metric="csat", scale=5, name="CSAT pilot")
        db.session.add_all([failing, idle])
        db.session.commit()
        failing_id = failing.id

    page = admin.get("/operations")
    text = section(page, "surveys")

    assert "Support NPS NPS active 2026-03-04 05:06 UTC" in text
    assert "error Kustomer refused the API key (401)." in text
    assert "CSAT pilot" in text and "inactive never none" in text
    with app.test_request_context():
        href = (
            url_for("setup.survey", survey_id=failing_id)
            if "setup.survey" in app.view_functions
            else f"/surveys/{failing_id}"
        )
    assert f'<a href="{href}">Support NPS</a>' in page.get_data(as_text=True)


# -- Failed jobs --------------------------------------------------------------------------


def test_a_failed_job_is_listed_and_retry_requeues_it(app, admin, redis_client):
    with app.app_context():
        job = get_queue("scans").enqueue(explode)
    run_burst_worker(app, "scans")

    page = admin.get("/operations")
    assert row(page, "queue-scans") == "scans 0 0 1 0"
    failed = section(page, "failed-jobs")
    assert job.id in failed
    assert "tests.web.test_operations.explode" in failed
    assert "RuntimeError: boom: the helpdesk said no" in failed
    assert "Traceback" not in failed  # the last line only

    # The retry needs the page's CSRF token.
    assert admin.post(f"/operations/jobs/{job.id}/retry").status_code == 400
    token = csrf_of(page.get_data(as_text=True))
    response = admin.post(f"/operations/jobs/{job.id}/retry", data={"csrf_token": token})
    assert response.status_code == 302
    with app.app_context():
        queue = get_queue("scans")
        assert queue.job_ids == [job.id]
        assert job.id not in FailedJobRegistry(queue=queue)

    page = admin.get("/operations", follow_redirects=True)
    assert row(page, "queue-scans") == "scans 1 0 0 0"
    assert "No failed job." in section(page, "failed-jobs")

    # Twice is harmless: it is not failed any more.
    again = admin.post(
        f"/operations/jobs/{job.id}/retry", data={"csrf_token": token}, follow_redirects=True
    )
    assert f"The job {job.id} is no longer in a failed list" in text_of(again)
    with app.app_context():
        assert get_queue("scans").job_ids == [job.id]


@pytest.mark.parametrize("job_id", ["..", "a.b", "x" * 129, "id%20with%20space"])
def test_retry_refuses_job_ids_that_rq_would_not_make(admin, redis_client, job_id):
    token = csrf_of(admin.get("/operations").get_data(as_text=True))
    response = admin.post(f"/operations/jobs/{job_id}/retry", data={"csrf_token": token})
    assert response.status_code == 404


# -- Helpdesk connections -----------------------------------------------------------------


def add_connection(app, url: str, api_key: str, helpdesk: str = "kustomer") -> int:
    with app.app_context():
        connection = Connection(helpdesk=helpdesk, name="Acme support", settings={"url": url})
        connection.set_secrets({"api_key": api_key})
        db.session.add(connection)
        db.session.commit()
        return connection.id


def check_now(admin, connection_id: int):
    token = csrf_of(admin.get("/operations").get_data(as_text=True))
    response = admin.post(f"/connections/{connection_id}/check", data={"csrf_token": token})
    assert response.status_code == 302
    return admin.get(response.headers["Location"])


def stored(app, connection_id: int) -> Connection:
    with app.app_context():
        return db.session.get(Connection, connection_id)


def test_check_now_stores_a_working_connection(app, admin, redis_client, sandbox):  # noqa: F811
    app.config["HUB_ALLOWED_HELPDESK_URLS"] = [sandbox.url]
    connection_id = add_connection(app, sandbox.url, sandbox.seeded.api_key)
    assert "not checked yet" in section(admin.get("/operations"), "connections")

    page = check_now(admin, connection_id)

    assert stored(app, connection_id).status == "connected"
    text = section(page, "connections")
    assert "Acme support · Kustomer connected Connected to 127.0.0.1" in text
    assert "Warning" not in text and "Missing roles" not in text
    assert sandbox.seeded.api_key not in page.get_data(as_text=True)


def test_check_now_shows_the_key_expiry_and_missing_roles(
    app,
    admin,
    redis_client,
    sandbox,  # noqa: F811
):
    app.config["HUB_ALLOWED_HELPDESK_URLS"] = [sandbox.url]
    api_key = "limited-key-4f9d2a7c"
    roles = tuple(r for r in ALL_ROLES if not r.endswith(("note.create", "metadata.update")))
    sandbox.org.keys[api_key] = ApiKey(
        api_key, "Survey key", roles=roles, expires_at="2027-01-31T00:00:00.000Z"
    )
    connection_id = add_connection(app, sandbox.url, api_key)

    page = check_now(admin, connection_id)

    connection = stored(app, connection_id)
    assert connection.status == "error"
    assert "expires on 2027-01-31" in connection.status_message
    text = section(page, "connections")
    assert "error Connected to 127.0.0.1" in text and "with the key 'Survey key'" in text
    assert "Warning: This key expires on 2027-01-31; surveys stop then." in text
    assert "Missing roles: org.permission.note.create" in text
    assert "org.permission.metadata.update" in text
    assert "has a problem" in text_of(page)
    assert api_key not in page.get_data(as_text=True)
    assert api_key not in connection.status_message


@pytest.mark.parametrize(
    ("helpdesk", "allowed", "key", "expected"),
    [
        ("kustomer", True, "wrong-key-0000", "Kustomer refused the API key"),
        ("kustomer", False, None, "is not a Kustomer address"),
        ("zendesk", True, None, "uses the helpdesk 'zendesk', which no installed plugin"),
    ],
)
def test_check_now_turns_helpdesk_errors_into_the_status(
    app,
    admin,
    redis_client,
    sandbox,  # noqa: F811
    helpdesk,
    allowed,
    key,
    expected,
):
    app.config["HUB_ALLOWED_HELPDESK_URLS"] = [sandbox.url] if allowed else []
    connection_id = add_connection(app, sandbox.url, key or sandbox.seeded.api_key, helpdesk)

    page = check_now(admin, connection_id)

    connection = stored(app, connection_id)
    assert connection.status == "error"
    assert expected in connection.status_message
    assert expected in text_of(page)
    assert (key or sandbox.seeded.api_key) not in page.get_data(as_text=True)


def test_check_now_of_a_missing_connection_is_404(admin):
    token = csrf_of(admin.get("/operations").get_data(as_text=True))
    assert admin.post("/connections/999/check", data={"csrf_token": token}).status_code == 404


# -- Redis down ---------------------------------------------------------------------------


def test_the_page_renders_without_redis(app, admin):
    with app.app_context():
        connection = Connection(helpdesk="kustomer", name="Acme", settings={})
        db.session.add(Survey(connection=connection, metric="nps", scale=11, name="Support NPS"))
        db.session.commit()
    port = free_port()  # nothing listens there
    app.config["REDIS_URL"] = f"redis://:hunter2-secret@127.0.0.1:{port}/0"
    app.extensions["hub"].redis = None

    page = admin.get("/operations")

    assert page.status_code == 200
    text = text_of(page)
    assert f"Redis at redis://:***@127.0.0.1:{port}/0 is not reachable (" in text
    assert "Connection refused)." in text
    assert "hunter2-secret" not in page.get_data(as_text=True)
    assert "Support NPS" in section(page, "surveys")
    assert "Acme" in section(page, "connections")
    assert "Not known while Redis is not reachable." in section(page, "queues")


# -- Plugins ------------------------------------------------------------------------------


def test_the_plugins_page_lists_what_each_plugin_registers(admin):
    page = admin.get("/plugins")

    assert page.status_code == 200
    kustomer = row(page, "plugin-kustomer")
    assert f"kustomer surveyhub-kustomer {version('surveyhub-kustomer')}" in kustomer
    assert "Helpdesk: Kustomer (kustomer)" in kustomer
    assert "register_helpdesks" in kustomer and "register_blueprints" in kustomer
    metrics = row(page, "plugin-metrics")
    assert f"metrics surveyhub-metrics {version('surveyhub-metrics')}" in metrics
    assert "Metric: NPS (nps)" in metrics
    assert "register_metrics" in metrics
    assert "hub.pipeline part of the hub" in row(page, "plugin-hub.pipeline")
    text = text_of(page)
    assert "Blocked plugins None." in text
    assert ".venv/bin/pip install surveyhub-<name>" in text
    assert "restart gunicorn, every surveyhub worker" in text
    assert "A helpdesk plugin then appears in the app directory" in text


def test_a_blocked_plugin_is_listed_as_blocked(app, tmp_path, database_url):
    blocked_app = create_app(
        make_config(tmp_path, database_url, HUB_DISABLED_PLUGINS=["kustomer", "not-installed"])
    )
    try:
        client = signed_in(
            blocked_app, add_person(blocked_app, "root@example.com", Role.ADMIN.value)
        )
        page = client.get("/plugins")
        assert page.status_code == 200
        assert 'id="plugin-kustomer"' not in page.get_data(as_text=True)
        assert row(page, "blocked-kustomer") == (
            f"kustomer blocked surveyhub-kustomer {version('surveyhub-kustomer')}"
        )
        assert row(page, "blocked-not-installed") == "not-installed blocked not installed —"
    finally:
        with blocked_app.app_context():
            db.session.remove()
            db.engine.dispose()


# -- Access -------------------------------------------------------------------------------


def test_agents_are_refused_everywhere(app, agent, redis_client):
    connection_id = add_connection(app, "https://acme.kustomerapp.com", "agent-must-not-see")
    with app.app_context():
        job = get_queue("scans").enqueue(explode)
    run_burst_worker(app, "scans")
    token = csrf_for(app, agent)

    assert agent.get("/operations").status_code == 403
    assert agent.get("/plugins").status_code == 403
    retry = agent.post(f"/operations/jobs/{job.id}/retry", data={"csrf_token": token})
    assert retry.status_code == 403
    check = agent.post(f"/connections/{connection_id}/check", data={"csrf_token": token})
    assert check.status_code == 403
    with app.app_context():
        assert job.id in FailedJobRegistry(queue=get_queue("scans"))
    assert stored(app, connection_id).status == "new"


def test_anonymous_visitors_are_sent_to_sign_in(client):
    for path in ("/operations", "/plugins"):
        response = client.get(path)
        assert response.status_code == 302
        assert "/login" in response.headers["Location"]
