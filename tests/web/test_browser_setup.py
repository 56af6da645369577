"""The seed's steps in a real browser, from an empty hub to a customer's rating on the
report: Debian Chromium driven by Playwright, only visible labels, against the Kustomer
sandbox over HTTP, a real SMTP server, PostgreSQL, Redis and an RQ worker process. Every
page on the way is checked with axe-core and photographed at 1280 px (and the wizard at
360 px) into tests/screenshots/."""

from __future__ import annotations

import re
import subprocess
import threading

import pytest
from flask_migrate import upgrade
from sqlalchemy import select
from werkzeug.serving import make_server

from hub.app import create_app
from hub.extensions import db
from hub.models import Connection
from hub.models import Delivery
from hub.models import Rating
from hub.models import Survey
from hub.models import User
from hub.models import utcnow
from hub.web.auth import first_admin_url
from tests.conftest import free_port
from tests.conftest import make_config
from tests.conftest import redis_url
from tests.test_a11y import SCREENSHOTS
from tests.test_a11y import browser  # noqa: F401  (a fixture)
from tests.test_a11y import serious_violations

pytestmark = pytest.mark.slow

PASSWORD = "a long admin password"


@pytest.fixture
def hub(postgres_schema_url, sandbox, smtp_server, redis_client, subprocess_env, tmp_path):
    """An empty hub served over HTTP, and the environment for its worker process."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = {
        "HUB_ALLOWED_HELPDESK_URLS": [sandbox.url],
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": smtp_server.port,
        "HUB_BASE_URL": base,
    }
    app = create_app(make_config(tmp_path, postgres_schema_url, **settings))
    with app.app_context():
        upgrade()
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(
        subprocess_env,
        DATABASE_URL=postgres_schema_url,
        REDIS_URL=redis_url(),
        HUB_BASE_URL=base,
        HUB_ALLOWED_HELPDESK_URLS=sandbox.url,
        HUB_SMTP_HOST="127.0.0.1",
        HUB_SMTP_PORT=str(smtp_server.port),
        HUB_WRITEBACK_GRACE="0",
    )
    yield app, base, env
    server.shutdown()


def run_worker(env, tmp_path) -> None:
    """One `surveyhub worker --burst`: the scan, then the sends it enqueues."""
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        done = subprocess.run(
            ["surveyhub", "worker", "--burst"], env=env, stdout=out, stderr=subprocess.STDOUT,
            timeout=180,
        )  # fmt: skip
    assert done.returncode == 0, log.read_text()[-3000:]


class Visit:
    """Checks each page the test passes: axe-core, a screenshot, nothing too wide."""

    def __init__(self, page, width: int) -> None:
        self.page = page
        self.width = width
        self.problems: dict[str, list[str]] = {}
        SCREENSHOTS.mkdir(exist_ok=True)

    def check(self, name: str) -> None:
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}-{self.width}.png"), full_page=True)
        found = serious_violations(self.page)
        scroll = self.page.evaluate("() => document.documentElement.scrollWidth")
        if scroll > self.width:
            found.append(f"{scroll} px wide on a {self.width} px screen")
        if found:
            self.problems[name] = found


def first_admin(app, base: str, page) -> None:
    """Create the first admin from the link `surveyhub run` prints, as a person would."""
    with app.app_context(), app.test_request_context():
        page.goto(first_admin_url(app, base))
    page.get_by_label("Your name").fill("Ann Admin")
    page.get_by_label("Email").fill("ann@example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Repeat password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()


def link_in(message, pattern: str) -> str:
    body = message.get_body(("plain",)) if message.is_multipart() else message
    return re.search(pattern, body.get_content()).group(0)


def test_the_seed_steps_in_a_browser(hub, sandbox, smtp_server, browser, tmp_path):  # noqa: F811
    app, base, env = hub
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    visit = Visit(page, 1280)
    first_admin(app, base, page)
    visit.check("overview")

    # 1. NPS in the left menu, Start NPS.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="NPS").click()
    visit.check("metric-nps")
    page.get_by_role("button", name="Start NPS").click()
    # 2. Distribution: Trigger.
    page.get_by_label("Survey name").fill("Support NPS")
    page.get_by_label("Trigger").check()
    visit.check("wizard-distribution")
    page.get_by_role("button", name="Continue").click()
    # 3. The app directory: the Kustomer tile.
    visit.check("wizard-apps")
    page.get_by_role("link", name="Kustomer").click()
    # 4. Kustomer URL and API key; a wrong key first, explained under its field.
    page.get_by_label("Kustomer URL").fill(sandbox.url)
    page.get_by_label("API key").fill("a-wrong-key")
    page.get_by_role("button", name="Connect").click()
    error = page.locator("#f-api_key-error")
    assert "Kustomer" in error.inner_text()
    assert page.get_by_label("API key").input_value() == ""  # never filled back
    visit.check("wizard-connect-error")
    with app.app_context():
        assert db.session.execute(select(Connection)).first() is None
    page.get_by_label("API key").fill(sandbox.seeded.api_key)
    page.get_by_role("button", name="Connect").click()
    # 5. Agents: Alex's checkbox, Continue (an invitation email goes out).
    visit.check("wizard-agents")
    page.get_by_label("Alex Agent").check()
    page.get_by_role("button", name="Continue").click()
    # 6-7. Trigger settings: Save settings, then Activate (with a look-back, so the
    # sandbox's tickets resolved two and three days ago count).
    visit.check("wizard-settings")
    page.get_by_label("Company name").fill("Acme")
    page.get_by_role("button", name="Save settings").click()
    assert "Settings saved." in page.content()
    assert page.locator(".badge", has_text="Inactive").count() == 1
    page.get_by_label("Also survey tickets resolved in the last").fill("7")
    page.get_by_role("button", name="Activate").click()
    assert page.locator(".badge", has_text="Active").count() == 1
    visit.check("survey-active")

    with app.app_context():
        survey = db.session.execute(select(Survey)).scalar_one()
        survey_id = survey.id
        alex = db.session.execute(select(User).where(User.email == "alex@acme.example"))
        alex_ref = alex.scalar_one().helpdesk_user_id
    run_worker(env, tmp_path)

    # The customer clicks 9 in the email they received, and leaves a comment.
    surveys = {m["To"].addresses[0].addr_spec: m for m in smtp_server.handler.messages}
    first = sandbox.seeded.eligible[0]
    with app.app_context():
        delivery = db.session.execute(
            select(Delivery).where(Delivery.ticket_id == first)
        ).scalar_one()
        address = delivery.requester_email
    score_link = link_in(surveys[address], r"http://\S+/r/\S+/9(?=\s)")
    customer = browser.new_context()  # the hub's CSP enforced, as for customers
    rating_page = customer.new_page()
    rating_page.goto(score_link)
    rating_page.get_by_label("Anything you would like to add?").fill("Fast and friendly")
    rating_page.get_by_role("button", name="Send comment").click()
    rating_page.wait_for_url(re.compile(r".*/thanks$"))
    customer.close()

    # Another agent's rating, which Alex must never see.
    with app.app_context():
        other = Delivery(
            survey_id=survey_id, ticket_id="other-ticket", requester_email="x@example.com",
            agent_ref="someone-else", state="sent",
        )  # fmt: skip
        db.session.add(other)
        db.session.flush()
        db.session.add(
            Rating(
                delivery_id=other.id, survey_id=survey_id, agent_ref="someone-else",
                value=2, scale=11, comment="Not for Alex to read",
            )
        )  # fmt: skip
        db.session.commit()

    # The rating shows on the report, in the funnel and in the deliveries log.
    page.goto(f"{base}/surveys/{survey_id}/report?from=2000-01-01")
    assert "Fast and friendly" in page.content()
    visit.check("report-seed")
    page.goto(f"{base}/surveys/{survey_id}/funnel?from=2000-01-01")
    seeded = sandbox.seeded
    seen = len(seeded.eligible) + len(seeded.skipped) + 1  # and Bea's ticket above
    # Each count is a link to its tickets, named by what it counts.
    for name in (
        f"{seen} seen tickets",
        "2 rated tickets",  # the customer's and Bea's
        "2 commented tickets",
        "2 tickets skipped: started by an agent",
        "1 ticket skipped: wrong channel",
    ):
        assert page.get_by_role("link", name=name, exact=True).count() == 1, name
    visit.check("funnel")
    page.goto(f"{base}/deliveries?survey={survey_id}")
    assert page.get_by_text("Fast and friendly").count() >= 1
    assert page.get_by_text(address).count() >= 1
    visit.check("deliveries")
    page.goto(f"{base}/metrics/nps/report?from=2000-01-01")
    assert "Fast and friendly" in page.content()
    visit.check("report-metric")
    page.goto(f"{base}/surveys/{survey_id}/dry-run")
    page.get_by_role("button", name="Preview").click()
    # The last 7 days again: every ticket was decided by the scan, none is sent twice.
    assert page.get_by_text("Would send").count() == 0
    assert f"{seen - 1} were decided before" in page.content()
    visit.check("dry-run")
    page.goto(f"{base}/operations")
    visit.check("operations")
    page.goto(f"{base}/plugins")
    visit.check("plugins")
    page.goto(f"{base}/agents")
    visit.check("agents")
    page.get_by_role("button", name="Sign out").click()

    # The invited agent sets a password from the emailed link and signs in.
    invitation = next(m for m in smtp_server.handler.messages if "invite" in m["Message-ID"])
    page.goto(link_in(invitation, r"http://\S+/invite/\S+"))
    visit.check("invite")
    page.get_by_label("Password", exact=True).fill("alex's own password")
    page.get_by_label("Repeat password").fill("alex's own password")
    page.get_by_role("button", name="Set password").click()
    page.get_by_label("Email").fill("alex@acme.example")
    page.get_by_label("Password").fill("alex's own password")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/me(\?.*)?$"))
    mine = page.content()
    assert "Fast and friendly" in mine and "Not for Alex to read" not in mine
    visit.check("agent-dashboard")
    page.goto(f"{base}/deliveries?agent=someone-else")
    assert "Not for Alex to read" not in page.content()
    assert "x@example.com" not in page.content()
    visit.check("agent-deliveries")
    for path in (
        "/metrics/nps", "/agents", f"/surveys/{survey_id}", f"/surveys/{survey_id}/report",
        f"/surveys/{survey_id}/funnel", "/operations", "/plugins", "/connections/1/agents",
        "/connections/1/edit", "/metrics/nps/new/connect/kustomer",
        f"/surveys/{survey_id}/ratings.csv",
    ):  # fmt: skip
        assert page.goto(f"{base}{path}").status in (403, 404), path
    assert alex_ref
    context.close()
    assert not visit.problems, visit.problems


def test_the_wizard_fits_a_phone(hub, sandbox, browser):  # noqa: F811
    """The set-up steps at 360 px: nothing wider than the screen, nothing axe finds."""
    app, base, _ = hub
    context = browser.new_context(viewport={"width": 360, "height": 800}, bypass_csp=True)
    page = context.new_page()
    visit = Visit(page, 360)
    first_admin(app, base, page)
    visit.check("overview")
    page.goto(f"{base}/metrics/nps")
    visit.check("metric-nps")
    page.get_by_role("button", name="Start NPS").click()
    visit.check("wizard-distribution")
    page.get_by_role("button", name="Continue").click()
    visit.check("wizard-apps")
    page.get_by_role("link", name="Kustomer").click()
    visit.check("wizard-connect")
    page.get_by_label("Kustomer URL").fill(sandbox.url)
    page.get_by_label("API key").fill(sandbox.seeded.api_key)
    page.get_by_role("button", name="Connect").click()
    visit.check("wizard-agents")
    page.get_by_role("button", name="Continue").click()
    visit.check("wizard-settings")
    # The pages for reading the numbers, with some answers to draw.
    with app.app_context():
        survey_id = db.session.execute(select(Survey.id)).scalar_one()
        for n, value in enumerate((10, 9, 9, 7, 3, 10, 8)):
            delivery = Delivery(
                survey_id=survey_id, ticket_id=f"t{n}", requester_email=f"c{n}@example.com",
                agent_ref="agent-1", state="sent", sent_at=utcnow(), opened_at=utcnow(),
            )  # fmt: skip
            db.session.add(delivery)
            db.session.flush()
            db.session.add(
                Rating(
                    delivery_id=delivery.id, survey_id=survey_id, agent_ref="agent-1",
                    value=value, scale=11, comment="Quick answer, thanks" if n % 2 else "",
                )
            )  # fmt: skip
        db.session.commit()
    for name, path in (
        ("report", f"/surveys/{survey_id}/report"),
        ("report-metric", "/metrics/nps/report"),
        ("funnel", f"/surveys/{survey_id}/funnel"),
        ("deliveries", "/deliveries"),
        ("dry-run", f"/surveys/{survey_id}/dry-run"),
        ("operations", "/operations"),
        ("plugins", "/plugins"),
        ("agents", "/agents"),
    ):
        page.goto(f"{base}{path}")
        visit.check(name)
    context.close()
    assert not visit.problems, visit.problems


COMMENTS = (
    "Fast and friendly, thank you!",
    "Solved on the first reply.",
    "Took three emails to get a real answer.",
    "Bea was patient and explained everything.",
    "Good, but the refund took a week.",
    "Great support as always.",
)


def test_a_month_of_answers_on_the_report(tmp_path, browser):  # noqa: F811
    """The README's picture: a month of answers for three agents on the report page,
    whose headline equals the NPS formula on the same answers."""
    import random
    from datetime import timedelta

    from hub.web.reports import report_score
    from tests.web.conftest import add_person

    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with app.app_context():
        upgrade()
        connection = Connection(helpdesk="kustomer", name="acme.kustomerapp.com", settings={})
        survey = Survey(
            connection=connection, metric="nps", scale=11, name="Support NPS", active=True,
            settings={"company_name": "Acme"}, last_scan_at=utcnow(),
        )  # fmt: skip
        db.session.add(survey)
        db.session.commit()
        survey_id = survey.id
    agents = {"5f1a": "Alex Agent", "5f1b": "Bea Agent", "5f1c": "Chris Agent"}
    for ref, name in agents.items():
        add_person(app, f"{name.split()[0].lower()}@acme.example", helpdesk_user_id=ref)
    add_person(app, "ann@example.com", role="admin")
    picks = random.Random(7)
    values = []
    with app.app_context():
        now = utcnow()
        for n in range(240):
            ref = picks.choice(list(agents))
            # Inside the default 30 whole UTC days at any time of day, and the answer
            # (two hours later) not after now: a run near midnight once put an
            # answer into tomorrow, outside the report.
            when = now - timedelta(days=picks.uniform(0, 28), hours=3)
            delivery = Delivery(
                survey_id=survey_id, ticket_id=f"67dd{n:04x}", state="sent", agent_ref=ref,
                requester_email=f"customer{n}@example.com", sent_at=when, created_at=when,
                opened_at=when if n % 3 else None,
            )  # fmt: skip
            db.session.add(delivery)
            if n % 2:
                continue
            db.session.flush()
            value = picks.choice((10, 10, 10, 9, 9, 9, 9, 8, 8, 7, 6, 4, 10, 9))
            values.append(value)
            db.session.add(
                Rating(
                    delivery_id=delivery.id, survey_id=survey_id, agent_ref=ref, value=value,
                    scale=11, created_at=when + timedelta(hours=2),
                    comment=picks.choice(COMMENTS) if n % 4 == 0 else "",
                )
            )  # fmt: skip
        db.session.commit()
        score = app.extensions["hub"].registry.metrics["nps"].score(values, 11)
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        page = context.new_page()
        page.goto(f"{base}/login")
        page.get_by_label("Email").fill("ann@example.com")
        page.get_by_label("Password").fill("correct horse battery")
        page.get_by_role("button", name="Sign in").click()
        page.goto(f"{base}/surveys/{survey_id}/report")
        visit = Visit(page, 1280)
        visit.check("report")
        headline = page.locator(".score-card .value").first.inner_text()
        assert headline == report_score(score.value, score.unit)
        assert f"n = {score.n}" in page.locator(".score-card").first.inner_text()
        context.close()
        assert not visit.problems, visit.problems
    finally:
        server.shutdown()
