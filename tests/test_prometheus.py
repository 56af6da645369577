"""`/metrics` for Prometheus: it parses with prometheus-client's own parser, its numbers
equal the database's, only allowed clients get it, and it never fails; JSON logs.

(tests/test_metrics.py is about the NPS/CSAT/CES metric plugins.)
"""

from __future__ import annotations

import io
import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from hub import observability
from hub.extensions import db
from hub.jobs import DEFAULT
from hub.jobs import HubJob
from hub.jobs import get_queue
from hub.logs import HubJsonFormatter
from hub.logs import bind
from hub.logs import handler
from hub.models import Delivery
from hub.models import Rating
from hub.models import WriteBack
from hub.observability import connection_label
from hub.observability import counts_from_database
from hub.observability import counts_from_metrics
from hub.pipeline.scan import scan_connection
from tests.conftest import add_delivery
from tests.kustomer.conftest import sandbox  # noqa: F401  (a fixture)
from tests.pipeline.conftest import hub  # noqa: F401  (a fixture)

TOKEN = "metrics-token-for-the-tests-1234"


def scrape(client, **kwargs) -> dict[str, list]:
    """GET /metrics, parsed: each family's samples by metric name."""
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=0.0.4")
    return {
        family.name: family.samples
        for family in text_string_to_metric_families(response.get_data(as_text=True))
    }


def by_label(samples, label: str, suffix: str = "") -> dict[str, float]:
    return {s.labels[label]: s.value for s in samples if s.name.endswith(suffix)}


def nonzero(counts: dict) -> dict:
    return {key: value for key, value in counts.items() if value}


def sql_counts(statement: str) -> dict[str, int]:
    return {str(key): int(n) for key, n in db.session.execute(text(statement)).all()}


def fill_database() -> None:
    """Deliveries in several states and skip reasons, ratings of two metrics, and
    write-backs with different outcomes."""
    nps = add_delivery("nps", 11).survey
    csat = add_delivery("csat", 5, email="joe@example.com").survey
    rows = [
        ("pending", None),
        ("sent", None),
        ("sent", None),
        ("failed", None),
        ("unknown", None),
        ("skipped", "cooldown"),
        ("skipped", "cooldown"),
        ("skipped", "no email"),
        ("skipped", "wrong channel"),
    ]
    sent = []
    for number, (state, reason) in enumerate(rows):
        survey = nps if number % 2 else csat
        delivery = Delivery(survey=survey, ticket_id=f"t-{number}", state=state, skip_reason=reason)
        db.session.add(delivery)
        if state == "sent":
            sent.append(delivery)
    db.session.flush()
    deliveries = [*sent, *db.session.query(Delivery).filter_by(ticket_id="conv-1").all()]
    outcomes = ["done", "failed", "pending", "done"]
    for delivery, outcome in zip(deliveries, outcomes, strict=True):
        rating = Rating(
            delivery_id=delivery.id,
            survey_id=delivery.survey_id,
            value=4,
            scale=delivery.survey.scale,
        )
        db.session.add(rating)
        db.session.flush()
        db.session.add(WriteBack(rating_id=rating.id, state=outcome))
    db.session.commit()


def test_metrics_parse_and_equal_the_database_counts(app, client, redis_client):
    with app.app_context():
        fill_database()
        families = scrape(client)
        deliveries = sql_counts("SELECT state, count(*) FROM deliveries GROUP BY state")
        skipped = sql_counts(
            "SELECT skip_reason, count(*) FROM deliveries WHERE state = 'skipped' "
            "GROUP BY skip_reason"
        )
        ratings = sql_counts(
            "SELECT s.metric, count(*) FROM ratings r JOIN surveys s ON s.id = r.survey_id "
            "GROUP BY s.metric"
        )
        write_backs = sql_counts("SELECT state, count(*) FROM write_backs GROUP BY state")
        assert len(deliveries) >= 5 and len(skipped) == 3 and len(write_backs) == 3
        assert ratings == {"nps": 2, "csat": 2}

        assert nonzero(by_label(families["surveyhub_deliveries"], "state")) == deliveries
        assert nonzero(by_label(families["surveyhub_deliveries_skipped"], "reason")) == skipped
        assert nonzero(by_label(families["surveyhub_ratings"], "metric")) == ratings
        assert nonzero(by_label(families["surveyhub_write_backs"], "state")) == write_backs
        # Every known state is present, at 0 when no row is in it.
        assert by_label(families["surveyhub_deliveries"], "state")["cancelled"] == 0

        # What the topology test calls: the scrape and the database agree.
        body = client.get("/metrics").get_data(as_text=True)
        assert counts_from_metrics(body) == counts_from_database()
        assert counts_from_database()["deliveries"]["sent"] == deliveries["sent"]


def test_the_operations_page_shows_the_same_numbers(app, client, redis_client):
    from hub.models import Role
    from tests.web.conftest import add_person
    from tests.web.conftest import signed_in

    with app.app_context():
        fill_database()
        counts = counts_from_database()
    admin = signed_in(app, add_person(app, "admin@example.com", Role.ADMIN.value))
    page = admin.get("/operations").get_data(as_text=True)
    families = scrape(client)
    for reason, count in by_label(families["surveyhub_deliveries_skipped"], "reason").items():
        row = f'id="count-deliveries_skipped-{reason.replace(" ", "-")}"'
        assert row in page
        assert f'{row}><th scope="row">{reason}</th><td class="num">{int(count)}</td>' in page
    assert counts["deliveries_skipped"]["cooldown"] == 2
    assert 'id="count-ratings-csat"><th scope="row">CSAT</th><td class="num">2</td>' in page


def test_queue_depth_and_job_failures(app, client, redis_client):
    with app.app_context():
        queue = get_queue(DEFAULT, app)
        for _ in range(3):
            queue.enqueue("tests.test_prometheus.noop")
        job = queue.enqueue("tests.test_prometheus.fail")
        observability.count_job_exception(job, RuntimeError, RuntimeError("boom"), None)
    families = scrape(client)
    jobs = {(s.labels["queue"], s.labels["state"]): s.value for s in families["surveyhub_rq_jobs"]}
    assert jobs[(DEFAULT, "queued")] == 4
    assert jobs[("sends", "queued")] == 0
    exceptions = by_label(families["surveyhub_rq_job_exceptions"], "queue", "_total")
    assert exceptions[DEFAULT] == 1 and exceptions["sends"] == 0
    assert families["surveyhub_rq_workers"][0].value == 0


def noop() -> None:
    return None


def fail() -> None:
    raise RuntimeError("boom")


# -- Who may scrape -------------------------------------------------------------------------


def test_only_loopback_without_a_token(app, client):
    assert client.get("/metrics").status_code == 200  # the test client is 127.0.0.1
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    outside = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert outside.status_code == 403
    assert "HUB_METRICS_TOKEN" in outside.get_data(as_text=True)
    assert "surveyhub_" not in outside.get_data(as_text=True)
    # Relayed by a proxy the hub was not told of: the loopback address is the proxy's.
    relayed = client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert relayed.status_code == 403


def test_allow_list_names_networks(app, client):
    app.config["HUB_METRICS_ALLOWED_IPS"] = ["10.0.0.0/8"]
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.2.3.4"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "11.2.3.4"}).status_code == 403
    assert client.get("/metrics").status_code == 403  # loopback is no longer listed


def test_a_token_opens_it_from_anywhere(app, client):
    app.config["HUB_METRICS_TOKEN"] = TOKEN
    remote = {"REMOTE_ADDR": "203.0.113.9"}
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/metrics", environ_base=remote, headers=good).status_code == 200
    relayed = {**good, "X-Forwarded-For": "203.0.113.9"}
    assert client.get("/metrics", headers=relayed).status_code == 200
    missing = client.get("/metrics", environ_base=remote)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = {"Authorization": f"Bearer {TOKEN}x"}
    assert client.get("/metrics", environ_base=remote, headers=wrong).status_code == 401
    # A wrong token is refused even from an allowed address.
    assert client.get("/metrics", headers=wrong).status_code == 401
    assert client.get("/metrics").status_code == 200  # loopback still may, without one


def test_a_source_that_cannot_be_read_is_reported_not_a_5xx(app, client, monkeypatch):
    def broken():
        raise OperationalError("SELECT", {}, Exception("the database is down"))

    monkeypatch.setattr(observability, "counts_from_database", broken)
    app.extensions["hub"].redis = Redis(port=1, socket_connect_timeout=1)
    families = scrape(client)
    up = by_label(families["surveyhub_metrics_source_up"], "source")
    assert up == {"database": 0, "redis": 0}
    assert "surveyhub_deliveries" not in families


def test_web_requests_are_counted(app, client):
    client.get("/healthz")
    families = scrape(client)
    answered = [
        s
        for s in families["surveyhub_http_requests"]
        if s.name.endswith("_total") and s.labels["endpoint"] == "health.healthz"
    ]
    assert answered and answered[0].labels["status"] == "200" and answered[0].value >= 1
    assert "surveyhub_http_request_duration_seconds" in families


# -- Helpdesk requests, 429s and scans, counted by every process in Redis ------------------


def test_helpdesk_requests_and_429s_per_connection(hub, client):  # noqa: F811
    box = hub.sandbox
    label = connection_label(hub.connection_id)

    def counted() -> tuple[float, float, dict]:
        families = scrape(client)
        requests = by_label(families["surveyhub_helpdesk_requests"], "connection", "_total")
        limited = by_label(families["surveyhub_helpdesk_rate_limited"], "connection", "_total")
        return requests.get(label, 0), limited.get(label, 0), families

    # The activation prepared the helpdesk already: counted like any request.
    requests_before, limited_before, _ = counted()
    made_before = sum(box.state()["requests"].values())
    assert requests_before == made_before > 0 and limited_before == 0
    box.faults(burst_429=2, reset_in=0)  # two 429s, then the reset time is now
    with hub.app.app_context():
        reports = scan_connection(hub.connection_id)
    assert reports[hub.survey_id].pending >= 1
    made = sum(box.state()["requests"].values())
    requests, limited, families = counted()
    assert requests == made >= made_before + 3
    assert limited == 2
    durations = families["surveyhub_scan_duration_seconds"]
    count = {s.labels["outcome"]: s.value for s in durations if s.name.endswith("_count")}
    seconds = {s.labels["outcome"]: s.value for s in durations if s.name.endswith("_sum")}
    assert count == {"ok": 1, "error": 0} and seconds["ok"] > 0
    last = by_label(families["surveyhub_scan_last_duration_seconds"], "connection")
    assert last[label] == pytest.approx(seconds["ok"], abs=0.01)
    # The scan's deliveries are in the database counts too.
    with hub.app.app_context():
        assert counts_from_metrics(client.get("/metrics").get_data(as_text=True)) == (
            counts_from_database()
        )


def test_a_scan_logs_progress_while_it_runs(hub, caplog, monkeypatch):  # noqa: F811
    from hub.pipeline import scan

    monkeypatch.setattr(scan, "PROGRESS_EVERY", 2)
    with caplog.at_level(logging.INFO, logger="hub.pipeline.scan"), hub.app.app_context():
        scan_connection(hub.connection_id)
    lines = [r.getMessage() for r in caplog.records if r.name == "hub.pipeline.scan"]
    progress = [line for line in lines if "tickets so far" in line]
    assert progress and lines.index(progress[0]) < len(lines) - 1
    assert "done" in lines[-1]


def test_a_slow_scan_logs_progress_by_time(hub, caplog, monkeypatch):  # noqa: F811
    from hub.pipeline import scan

    monkeypatch.setattr(scan, "PROGRESS_SECONDS", 0.0)  # every ticket is "a while later"
    with caplog.at_level(logging.INFO, logger="hub.pipeline.scan"), hub.app.app_context():
        scan_connection(hub.connection_id)
    lines = [r.getMessage() for r in caplog.records if r.name == "hub.pipeline.scan"]
    assert sum("tickets so far" in line for line in lines) >= 3
    assert "done" in lines[-1]


# -- JSON logs ------------------------------------------------------------------------------


def log_from_a_job() -> str:
    bind(survey_id=42)
    logging.getLogger("tests.json").warning("sent %s emails", 3, extra={"arguments": ["x"]})
    return "ok"


def test_json_logs_carry_the_job_and_survey(app, redis_client):
    stream = io.StringIO()
    json_handler = handler("json")
    json_handler.setStream(stream)
    logger = logging.getLogger("tests.json")
    logger.addHandler(json_handler)
    logger.setLevel(logging.INFO)
    try:
        job = get_queue(DEFAULT, app).enqueue("tests.test_prometheus.log_from_a_job")
        HubJob.app = app
        assert job.perform() == "ok"
        logger.info("outside any job")
    finally:
        logger.removeHandler(json_handler)
        HubJob.app = None
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "sent 3 emails"
    assert first["level"] == "WARNING" and first["logger"] == "tests.json"
    assert first["job_id"] == job.id and first["survey_id"] == 42
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert "arguments" not in first  # a job's arguments are never logged
    # Outside a job: no job id, and the job's survey is forgotten.
    assert second["message"] == "outside any job"
    assert "job_id" not in second and "survey_id" not in second


def test_json_log_setting(app, tmp_path):
    from hub.config import ConfigError
    from hub.config import load_config
    from hub.config import validate_config

    config = load_config({"HUB_LOG_FORMAT": "JSON"}, tmp_path)
    assert config["HUB_LOG_FORMAT"] == "json"
    config = {**app.config, "HUB_LOG_FORMAT": "xml"}
    with pytest.raises(ConfigError, match="HUB_LOG_FORMAT"):
        validate_config(config)
    config = {**app.config, "HUB_METRICS_ALLOWED_IPS": ["10.0.0.0/33"]}
    with pytest.raises(ConfigError, match="HUB_METRICS_ALLOWED_IPS"):
        validate_config(config)
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, None)
    assert json.loads(HubJsonFormatter().format(record))["message"] == "boom"


MULTIPROCESS_SCRIPT = """
import sys
from hub.app import create_app
app = create_app({
    "TESTING": True, "SECRET_KEY": sys.argv[1], "SQLALCHEMY_DATABASE_URI": sys.argv[2],
    "REDIS_URL": sys.argv[3], "INSTANCE_PATH": sys.argv[4],
})
client = app.test_client()
client.get("/healthz")
if sys.argv[5] == "scrape":
    sys.stdout.write(client.get("/metrics").get_data(as_text=True))
"""


@pytest.mark.slow
def test_multiprocess_mode_sums_every_web_process(tmp_path, subprocess_env):
    import subprocess
    import sys

    from tests.conftest import TEST_SECRET
    from tests.conftest import redis_url

    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {**subprocess_env, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    args = [TEST_SECRET, f"sqlite:///{tmp_path / 'hub.db'}", redis_url(), str(tmp_path / "i")]
    outputs = []
    for action in ("count", "count", "scrape"):  # three web processes, one after another
        done = subprocess.run(
            [sys.executable, "-c", MULTIPROCESS_SCRIPT, *args, action],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    families = {f.name: f for f in text_string_to_metric_families(outputs[-1])}
    healthz = [
        s
        for s in families["surveyhub_http_requests"].samples
        if s.labels["endpoint"] == "health.healthz" and s.name.endswith("_total")
    ]
    assert sum(s.value for s in healthz) == 3  # each process's file, summed
    assert "python_gc_objects_collected" not in families  # per-process metrics are left out
    assert "surveyhub_metrics_source_up" in families
