"""End to end with real parts: PostgreSQL, Redis, `surveyhub worker` and `surveyhub
scheduler` processes, an SMTP server and the Kustomer sandbox over HTTP, with faults."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from dataclasses import field

import psutil
import pytest
import requests
from flask_migrate import upgrade
from sqlalchemy import select
from werkzeug.serving import make_server

from hub.app import create_app
from hub.extensions import db
from hub.models import Connection
from hub.models import Delivery
from hub.models import Survey
from hub.models import WriteBack
from hub.pipeline.scan import scan_survey
from hub.suppressions import suppress
from surveyhub_kustomer.sandbox.org import UNSUBSCRIBED
from tests.conftest import free_port
from tests.conftest import make_config
from tests.conftest import redis_url
from tests.pipeline.conftest import add_survey

pytestmark = pytest.mark.slow

FINAL = {"sent", "skipped", "failed", "unknown"}


def wait_until(predicate, timeout=60.0, what="the condition", live=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    logs = LIVE[0].log_tail() if LIVE else ""
    states = LIVE[0].states() if LIVE else ""
    raise AssertionError(f"Timed out waiting for {what}\n{states}\n{logs}")


LIVE: list = []


@dataclass
class Live:
    app: object
    sandbox: object
    smtp: object
    env: dict
    base_url: str
    connection_id: int
    logs: object = None
    processes: dict = field(default_factory=dict)

    def start(self, name: str, *args: str) -> None:
        log = open(self.logs / f"{name}-{time.monotonic_ns()}.log", "w")  # noqa: SIM115
        self.processes[name] = subprocess.Popen(
            ["surveyhub", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {path.name}\n" + "\n".join(path.read_text().splitlines()[-40:])
            for path in sorted(self.logs.glob("*.log"))
        )

    def kill(self, name: str) -> None:
        """SIGKILL the process and the work horse it forked, as a crash would."""
        process = self.processes.pop(name)
        family = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        for child in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        process.terminate()
        process.wait(timeout=30)

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

    def rows(self, survey_id: int) -> dict[str, Delivery]:
        with self.app.app_context():
            query = select(Delivery).where(Delivery.survey_id == survey_id)
            return {row.ticket_id: row for row in db.session.execute(query).scalars()}

    def states(self) -> str:
        with self.app.app_context():
            rows = db.session.execute(select(Delivery)).scalars().all()
            return "\n".join(
                f"delivery {r.id} survey {r.survey_id} {r.ticket_id} {r.state} "
                f"{r.skip_reason or ''} {r.error} next={r.next_attempt_at}"
                for r in rows
            )

    def write_backs(self) -> list[WriteBack]:
        with self.app.app_context():
            return db.session.execute(select(WriteBack)).scalars().all()

    def recipients(self) -> list[str]:
        return sorted(m["To"].addresses[0].addr_spec for m in self.smtp.handler.messages)

    def settled(self, survey_id: int, expected: int) -> bool:
        rows = self.rows(survey_id)
        return len(rows) == expected and all(r.state in FINAL for r in rows.values())


@pytest.fixture
def live(postgres_schema_url, sandbox, smtp_server, redis_client, subprocess_env, tmp_path):
    web_port = free_port()
    base_url = f"http://127.0.0.1:{web_port}"
    settings = {
        "HUB_ALLOWED_HELPDESK_URLS": [sandbox.url],
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": smtp_server.port,
        "HUB_BASE_URL": base_url,
        "HUB_WRITEBACK_GRACE": 3,
    }
    app = create_app(make_config(tmp_path, postgres_schema_url, **settings))
    with app.app_context():
        upgrade()
        connection = Connection(helpdesk="kustomer", name="Sandbox", settings={"url": sandbox.url})
        connection.set_secrets({"api_key": sandbox.seeded.api_key})
        db.session.add(connection)
        db.session.commit()
        suppress(UNSUBSCRIBED, "unsubscribed")
        connection_id = connection.id
    server = make_server("127.0.0.1", web_port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(
        subprocess_env,
        DATABASE_URL=postgres_schema_url,
        REDIS_URL=redis_url(),
        HUB_BASE_URL=base_url,
        HUB_ALLOWED_HELPDESK_URLS=sandbox.url,
        HUB_SMTP_HOST="127.0.0.1",
        HUB_SMTP_PORT=str(smtp_server.port),
        HUB_SCAN_INTERVAL="1",
        HUB_RECONCILE_INTERVAL="1",
        HUB_SCHEDULER_TICK="0.2",
        HUB_SENDING_TIMEOUT="3",
        HUB_WRITEBACK_GRACE="3",
    )
    running = Live(app, sandbox, smtp_server, env, base_url, connection_id, tmp_path)
    LIVE[:] = [running]
    yield running
    LIVE.clear()
    running.stop_all()
    server.shutdown()


def answer_like_a_browser(live: Live, message, score: int, comment: str) -> None:
    """Follow the score link from a received email: GET, then the page's POST, then a comment."""
    text = message.get_body(("plain",)).get_content()
    link = re.search(rf"(http://\S+/r/\S+/{score})\s", text).group(1)
    with requests.Session() as browser:
        page = browser.get(link, timeout=10)
        assert page.status_code == 200 and 'method="post"' in page.text
        comment_page = browser.post(link, data={"auto": "1"}, timeout=10)
        assert comment_page.status_code == 200 and 'name="comment"' in comment_page.text
        thanks = browser.post(comment_page.url, data={"comment": comment}, timeout=10)
        assert thanks.status_code == 200


def start_and_settle(live: Live, metric: str = "nps", scale: int = 11) -> tuple[int, int]:
    """Activate a survey, start a worker and the scheduler, wait for every seeded ticket
    to be decided and sent or skipped; return the survey id and the delivery count."""
    seeded = live.sandbox.seeded
    with live.app.app_context():
        survey_id = add_survey(live.connection_id, metric, scale)
    live.start("worker", "worker")
    live.start("scheduler", "scheduler")
    expected = len(seeded.eligible) + len(seeded.skipped)
    wait_until(lambda: live.settled(survey_id, expected), what="every delivery to settle")
    return survey_id, expected


def test_end_to_end_with_real_parts(live):
    seeded = live.sandbox.seeded
    survey_id, expected = start_and_settle(live)
    rows = live.rows(survey_id)
    assert {t for t, r in rows.items() if r.state == "sent"} == set(seeded.eligible)
    assert {t: r.skip_reason for t, r in rows.items() if r.state == "skipped"} == seeded.skipped
    assert live.recipients() == sorted(rows[t].requester_email for t in seeded.eligible)

    conversation = seeded.eligible[0]
    email = rows[conversation].requester_email
    message = next(m for m in live.smtp.handler.messages if m["To"].addresses[0].addr_spec == email)
    answer_like_a_browser(live, message, 9, "Fast and friendly")
    wait_until(
        lambda: live.sandbox.state()["custom"].get(conversation) == {"surveyhubNpsScoreNum": 9},
        what="the write-back",
    )
    notes = [n["body"] for n in live.sandbox.state()["notes"][conversation]]
    assert notes == [f'NPS 9/10 (promoter) from {email} — "Fast and friendly" — via SurveyHub']

    live.stop("scheduler")  # so the scan below is not the one that finds the lock taken
    with live.app.app_context():
        survey = db.session.get(Survey, survey_id)
        survey.watermark = survey.resolved_since  # re-read everything since activation
        db.session.commit()
        report = scan_survey(survey_id)
    assert not report.locked
    assert report.already == expected
    assert (report.pending, sum(report.skipped.values())) == (0, 0)
    time.sleep(2)  # a few more scheduler ticks
    assert len(live.rows(survey_id)) == expected
    assert len(live.smtp.handler.messages) == len(seeded.eligible)
    assert len(live.sandbox.state()["notes"][conversation]) == 1


def test_csat_and_ces_side_by_side_on_one_connection(live):
    seeded = live.sandbox.seeded
    with live.app.app_context():
        csat = add_survey(live.connection_id, "csat", 3)
        ces = add_survey(live.connection_id, "ces", 7)
    live.start("worker", "worker")
    live.start("scheduler", "scheduler")
    expected = len(seeded.eligible) + len(seeded.skipped)
    for survey_id in (csat, ces):
        wait_until(lambda s=survey_id: live.settled(s, expected), what="both surveys to settle")
    # No cooldown for CSAT and CES: the customer's second ticket is surveyed as well.
    assert len(live.smtp.handler.messages) == 2 * (len(seeded.eligible) + 1)
    conversation = seeded.eligible[2]
    email = live.rows(csat)[conversation].requester_email
    messages = [m for m in live.smtp.handler.messages if m["To"].addresses[0].addr_spec == email]
    by_links = {
        len(re.findall(r"/r/\S+/\d+\s", m.get_body(("plain",)).get_content())): m for m in messages
    }
    answer_like_a_browser(live, by_links[3], 3, "Great")
    answer_like_a_browser(live, by_links[7], 6, "Easy")
    wait_until(
        lambda: (
            live.sandbox.state()["custom"].get(conversation)
            == {"surveyhubCsatScoreNum": 3, "surveyhubCesScoreNum": 6}
        ),
        what="both write-backs",
    )
    notes = sorted(n["body"] for n in live.sandbox.state()["notes"][conversation])
    assert notes == [
        f'CES 6/7 (positive) from {email} — "Easy" — via SurveyHub',
        f'CSAT 3/3 (positive) from {email} — "Great" — via SurveyHub',
    ]


def assert_nothing_lost_or_doubled(live: Live, survey_id: int) -> None:
    """Every ticket ends sent, skipped, failed or unknown with a reason; no email twice."""
    seeded = live.sandbox.seeded
    rows = live.rows(survey_id)
    assert len(rows) == len(seeded.eligible) + len(seeded.skipped)
    for row in rows.values():
        assert row.state in FINAL
        if row.state != "sent":
            assert row.skip_reason or row.error
    recipients = live.recipients()
    assert len(recipients) == len(set(recipients)), "an email was sent twice"
    sent = {rows[t].requester_email for t in seeded.eligible if rows[t].state == "sent"}
    assert sent <= set(recipients)


def rate_first(live: Live, survey_id: int, score: int = 8) -> str:
    conversation = live.sandbox.seeded.eligible[0]
    email = live.rows(survey_id)[conversation].requester_email
    message = next(m for m in live.smtp.handler.messages if m["To"].addresses[0].addr_spec == email)
    answer_like_a_browser(live, message, score, "ok")
    return conversation


def test_helpdesk_5xx_429_and_slow_answers_during_scan_and_write_back(live):
    with live.app.app_context():
        survey_id = add_survey(live.connection_id)
    live.sandbox.faults(fail=[502, 503, 500], burst_429=3, reset_in=2, slow=0.2)
    live.start("worker", "worker")
    live.start("scheduler", "scheduler")
    expected = len(live.sandbox.seeded.eligible) + len(live.sandbox.seeded.skipped)
    wait_until(lambda: live.settled(survey_id, expected), timeout=90, what="the scan")
    assert_nothing_lost_or_doubled(live, survey_id)
    assert all(
        r.state == "sent"
        for t, r in live.rows(survey_id).items()
        if t in live.sandbox.seeded.eligible
    )
    live.sandbox.faults(apply_then_fail=[502], burst_429=2, reset_in=2, fail=[503])
    conversation = rate_first(live, survey_id)
    wait_until(
        lambda: all(w.state == "done" for w in live.write_backs()) and live.write_backs(),
        timeout=90,
        what="the write-back",
    )
    assert len(live.sandbox.state()["notes"][conversation]) == 1


def test_worker_killed_mid_send_never_sends_twice(live):
    live.smtp.handler.delay = 4
    with live.app.app_context():
        survey_id = add_survey(live.connection_id)
    live.start("worker", "worker")
    live.start("scheduler", "scheduler")
    wait_until(
        lambda: any(r.state == "sending" for r in live.rows(survey_id).values()),
        what="a send in progress",
    )
    live.kill("worker")
    interrupted = {t for t, r in live.rows(survey_id).items() if r.state == "sending"}
    live.smtp.handler.delay = 0
    live.start("worker", "worker")
    expected = len(live.sandbox.seeded.eligible) + len(live.sandbox.seeded.skipped)
    wait_until(lambda: live.settled(survey_id, expected), timeout=90, what="settling")
    rows = live.rows(survey_id)
    assert {rows[t].state for t in interrupted} == {"unknown"}
    assert_nothing_lost_or_doubled(live, survey_id)


def test_worker_killed_mid_write_back_writes_one_note(live):
    with live.app.app_context():
        survey_id = add_survey(live.connection_id)
    live.start("worker", "worker")
    live.start("scheduler", "scheduler")
    expected = len(live.sandbox.seeded.eligible) + len(live.sandbox.seeded.skipped)
    wait_until(lambda: live.settled(survey_id, expected), what="the sends")
    # Slower than usual, but faster than the lease (HUB_SENDING_TIMEOUT, 3 s here): in
    # production the lease (10 min) is far longer than any request (30 s read timeout).
    live.sandbox.faults(slow=2)
    conversation = rate_first(live, survey_id)
    wait_until(
        lambda: any(w.state == "running" for w in live.write_backs()),
        what="a write-back in progress",
    )
    live.kill("worker")
    live.sandbox.faults(slow=0)
    live.start("worker", "worker")
    wait_until(
        lambda: live.write_backs() and all(w.state == "done" for w in live.write_backs()),
        timeout=90,
        what="the write-back to finish",
    )
    state = live.sandbox.state()
    assert len(state["notes"][conversation]) == 1
    assert state["custom"][conversation] == {"surveyhubNpsScoreNum": 8}


def test_redis_flushed_mid_run_loses_nothing(live, redis_client):
    live.smtp.handler.delay = 0.5
    with live.app.app_context():
        survey_id = add_survey(live.connection_id)
    live.start("worker", "worker")
    live.start("scheduler", "scheduler")
    wait_until(
        lambda: any(r.state == "sent" for r in live.rows(survey_id).values()),
        what="the first email",
    )
    redis_client.flushall()
    expected = len(live.sandbox.seeded.eligible) + len(live.sandbox.seeded.skipped)
    wait_until(lambda: live.settled(survey_id, expected), timeout=90, what="settling")
    assert_nothing_lost_or_doubled(live, survey_id)
    rows = live.rows(survey_id)
    assert all(rows[t].state in {"sent", "unknown"} for t in live.sandbox.seeded.eligible)
    # A rating, then Redis loses everything again before its write-back ran.
    conversation = rate_first(live, survey_id)
    redis_client.flushall()
    wait_until(
        lambda: live.write_backs() and all(w.state == "done" for w in live.write_backs()),
        timeout=60,
        what="the write-back after the flush",
    )
    assert len(live.sandbox.state()["notes"][conversation]) == 1


def test_smtp_down_then_back(live):
    from sqlalchemy import update

    live.smtp.stop()  # connection refused from now on
    with live.app.app_context():
        survey_id = add_survey(live.connection_id)
    live.start("worker", "worker")
    live.start("scheduler", "scheduler")
    eligible = live.sandbox.seeded.eligible
    wait_until(
        lambda: all((r := live.rows(survey_id).get(t)) and r.error for t in eligible),
        what="sends to fail while SMTP is down",
    )
    assert all(live.rows(survey_id)[t].state == "pending" for t in eligible)
    from aiosmtpd.controller import Controller

    from tests.conftest import CollectingHandler

    back = Controller(CollectingHandler(), hostname="127.0.0.1", port=live.smtp.port)
    back.start()  # back, on the same port
    live.smtp = back
    with live.app.app_context():  # as if the retry time had come
        db.session.execute(update(Delivery).values(next_attempt_at=None))
        db.session.commit()
    wait_until(
        lambda: all(live.rows(survey_id)[t].state == "sent" for t in eligible),
        timeout=60,
        what="sending once SMTP is back",
    )
    assert_nothing_lost_or_doubled(live, survey_id)
    back.stop()


def test_a_rating_is_written_back_while_a_thousand_sends_wait(live):
    """Write-backs jump the queue: the worker serves write-backs before sends."""
    from datetime import timedelta

    from sqlalchemy import func

    from hub.models import Rating
    from hub.pipeline.send import SEND_BATCH
    from hub.pipeline.send import YIELD_EVERY

    seeded = live.sandbox.seeded
    survey_id, expected = start_and_settle(live, "csat", 3)
    # A thousand more resolved email tickets (100 customers; CSAT has no cooldown), and a
    # mail server that takes its time: the sends queue up behind each other.
    org = live.sandbox.org
    agent = next(iter(org.users))
    # All at once, as far as the running scans can tell (the sandbox serves searches under
    # the same lock): a scan that saw only some would leave the rest to a scan queued
    # behind the sends this test piles up.
    with org.lock:
        people = [org.add_customer(f"Bulk {n}", [f"bulk{n}@example.com"]) for n in range(100)]
        for n in range(1000):  # resolved just before the watermark, inside the scan's overlap
            ago = timedelta(hours=48, minutes=20, seconds=n)
            org.add_conversation(people[n % 100], assignee=agent, updated_ago=ago, resolved_ago=ago)
    live.smtp.handler.delay = 0.03
    wait_until(
        lambda: len(live.rows(survey_id)) >= expected + 1000, timeout=120, what="the bulk scan"
    )
    email = live.rows(survey_id)[seeded.eligible[0]].requester_email
    message = next(m for m in live.smtp.handler.messages if m["To"].addresses[0].addr_spec == email)
    answer_like_a_browser(live, message, 3, "Quick")
    wait_until(
        lambda: any(w.state == "done" for w in live.write_backs()),
        timeout=180,
        what="the write-back",
    )
    with live.app.app_context():
        (done,) = [w for w in db.session.execute(select(WriteBack)).scalars() if w.done_at]
        rated_at = db.session.get(Rating, done.rating_id).created_at
        sent_meanwhile, still_to_send = (
            db.session.execute(
                select(func.count(Delivery.id)).where(
                    Delivery.survey_id == survey_id,
                    Delivery.sent_at > start,
                    Delivery.sent_at <= end,
                )
            ).scalar_one()
            for start, end in (
                (rated_at, done.done_at),
                (done.done_at, done.done_at + timedelta(days=1)),
            )
        )
        pending = db.session.execute(
            select(func.count(Delivery.id)).where(Delivery.state.in_(["pending", "sending"]))
        ).scalar_one()
        grace = timedelta(seconds=float(live.env["HUB_WRITEBACK_GRACE"]))
        after_due = db.session.execute(
            select(func.count(Delivery.id)).where(
                Delivery.sent_at > rated_at + grace, Delivery.sent_at <= done.done_at
            )
        ).scalar_one()
    # Most of the thousand were still waiting when the rating reached Kustomer.
    assert still_to_send + pending >= 5 * SEND_BATCH
    assert sent_meanwhile < SEND_BATCH
    # Once due, the write-back waited for one reconcile interval (the mail server takes
    # 0.03 s an email: at most 34 emails in the 1-second interval) and for a send job to
    # hand its batch back (every YIELD_EVERY emails) twice: the reconciler's turn and
    # the write-back's. Counted in emails, so a slow machine does not make it flaky.
    assert after_due <= 34 + 2 * YIELD_EVERY
    notes = live.sandbox.state()["notes"][seeded.eligible[0]]
    assert len(notes) == 1 and '"Quick"' in notes[0]["body"]


def test_forty_concurrent_clicks_make_one_rating_and_one_note(live):
    """Parallel clicks with different scores on one link, over HTTP on PostgreSQL, while a
    plugin's rating_received fails: the write-back is the hub's own, in the same
    transaction as the score, and the database allows one pending per rating."""
    from concurrent.futures import ThreadPoolExecutor

    from hub import hookimpl
    from hub.links import rating_token
    from hub.models import Rating

    class Broken:
        @hookimpl
        def rating_received(self, rating):
            raise RuntimeError("a plugin's bug")

    live.app.extensions["hub"].registry._pm.register(Broken())
    seeded = live.sandbox.seeded
    survey_id, _ = start_and_settle(live)
    conversation = seeded.eligible[0]
    with live.app.test_request_context():
        token = rating_token(live.rows(survey_id)[conversation].id)
    barrier = threading.Barrier(40)

    def click(n: int) -> int:
        barrier.wait()
        response = requests.post(
            f"{live.base_url}/r/{token}/{n % 11}", allow_redirects=False, timeout=60
        )
        return response.status_code

    with ThreadPoolExecutor(40) as pool:
        statuses = list(pool.map(click, range(40)))
    assert all(status < 500 for status in statuses), statuses
    wait_until(
        lambda: (wbs := live.write_backs()) and all(w.state == "done" for w in wbs),
        what="the write-back",
    )
    time.sleep(5)  # longer than the grace time: nothing else may follow
    with live.app.app_context():
        ratings = db.session.execute(select(Rating)).scalars().all()
    assert len(ratings) == 1
    assert len(live.write_backs()) == 1
    notes = live.sandbox.state()["notes"][conversation]
    assert len(notes) == 1
    assert notes[0]["body"].startswith(f"NPS {ratings[0].value}/10")
    custom = live.sandbox.state()["custom"][conversation]
    assert custom == {"surveyhubNpsScoreNum": ratings[0].value}
