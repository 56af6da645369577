"""The customer's pages in a real browser: one-click flow, keyboard use and axe-core."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import pytest
from flask_migrate import upgrade
from sqlalchemy import select
from werkzeug.serving import make_server

from hub.app import create_app
from hub.extensions import db
from hub.links import rating_token
from hub.links import unsubscribe_token
from hub.models import Rating
from tests.conftest import add_delivery
from tests.conftest import free_port
from tests.conftest import make_config

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
AXE = Path(__file__).parent / "a11y" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# Pretend the tab is in the background: the rating page then waits for its button, as
# it does for a mail scanner that fetches the link without showing it.
HIDDEN_TAB = """
Object.defineProperty(document, "visibilityState", {get: () => "hidden"});
Object.defineProperty(document, "hidden", {get: () => true});
"""

missing = [
    what
    for what, ok in (("chromium", Path(CHROMIUM).exists()), ("axe-core", AXE.exists()))
    if not ok
]
if missing and os.environ.get("CI"):
    raise RuntimeError(
        f"CI needs {', '.join(missing)} for the browser tests (see .ci/run, Makefile)"
    )
if missing:
    pytest.skip(
        f"{', '.join(missing)} missing: apt-get install chromium; make test installs axe-core",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The hub served over real HTTP on a free port, with a SQLite database."""
    tmp = tmp_path_factory.mktemp("a11y")
    app = create_app(make_config(tmp, f"sqlite:///{tmp / 'hub.db'}"))
    app.config["HUB_BASE_URL"] = base = f"http://127.0.0.1:{free_port()}"
    with app.app_context():
        upgrade()
    port = int(base.rsplit(":", 1)[1])
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, base
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A page with the hub's Content-Security-Policy enforced, as for customers."""
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def axe_page(browser):
    """A page that lets axe-core in: it is injected as an inline script, which the
    pages' CSP rightly refuses."""
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    yield page
    context.close()


def new_links(app, metric="nps", scale=11, **settings):
    with app.app_context():
        email = f"{uuid.uuid4().hex[:10]}@example.com"
        delivery = add_delivery(metric=metric, scale=scale, email=email, **settings)
        with app.test_request_context():
            return delivery.id, rating_token(delivery.id), unsubscribe_token(delivery.id)


def rating_of(app, delivery_id):
    with app.app_context():
        query = select(Rating).where(Rating.delivery_id == delivery_id)
        return db.session.execute(query).scalar_one_or_none()


def serious_violations(page) -> list[str]:
    page.add_script_tag(path=str(AXE))
    results = page.evaluate("async () => await axe.run(document)")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']]}"
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_click_in_a_real_browser_records_the_score_by_itself(live, page):
    app, base = live
    delivery_id, token, _ = new_links(app)
    page.goto(f"{base}/r/{token}/9")
    page.wait_for_url(f"{base}/r/{token}/comment")
    assert rating_of(app, delivery_id).value == 9


def test_hidden_tab_records_nothing_until_the_button_is_pressed(live, page):
    app, base = live
    delivery_id, token, _ = new_links(app)
    page.add_init_script(HIDDEN_TAB)
    page.goto(f"{base}/r/{token}/3")
    page.wait_for_timeout(300)
    assert rating_of(app, delivery_id) is None
    page.get_by_role("button").click()
    page.wait_for_url(f"{base}/r/{token}/comment")
    assert rating_of(app, delivery_id).value == 3


def test_the_whole_flow_works_by_keyboard_with_visible_focus(live, page):
    app, base = live
    delivery_id, token, _ = new_links(app, metric="csat", scale=3)
    page.add_init_script(HIDDEN_TAB)
    page.goto(f"{base}/r/{token}/3")
    page.keyboard.press("Tab")
    focused = page.evaluate(
        "() => { const e = document.activeElement; const s = getComputedStyle(e);"
        " return [e.tagName, s.outlineStyle, s.outlineWidth]; }"
    )
    assert focused[0] == "BUTTON"
    assert focused[1] != "none" and focused[2] != "0px"
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/r/{token}/comment")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "comment"
    page.keyboard.type("Quick and kind")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/r/{token}/thanks")
    assert rating_of(app, delivery_id).comment == "Quick and kind"


@pytest.mark.parametrize("language", ["en", "de"])
def test_axe_finds_no_serious_violation_on_the_public_pages(live, axe_page, language):
    page = axe_page
    app, base = live
    _, token, unsubscribe = new_links(app, language=language)
    page.add_init_script(HIDDEN_TAB)
    checked = {}
    page.goto(f"{base}/r/{token}/7")
    checked["rating"] = serious_violations(page)
    page.get_by_role("button").click()
    page.wait_for_url(f"{base}/r/{token}/comment")
    checked["comment"] = serious_violations(page)
    page.get_by_role("button").click()
    page.wait_for_url(f"{base}/r/{token}/thanks")
    checked["thank-you"] = serious_violations(page)
    page.goto(f"{base}/u/{unsubscribe}")
    checked["unsubscribe"] = serious_violations(page)
    page.get_by_role("button").click()
    page.wait_for_load_state()
    checked["unsubscribed"] = serious_violations(page)
    page.goto(f"{base}/r/not-a-token/7")
    checked["invalid link"] = serious_violations(page)
    assert checked == {name: [] for name in checked}


def test_axe_would_notice_a_problem(live, axe_page):
    page = axe_page
    """The check above can fail: a button without a name is a critical violation."""
    _, base = live
    page.goto(f"{base}/healthz")
    page.set_content("<html lang='en'><body><main><button></button></main></body></html>")
    assert any(v.startswith("button-name") for v in serious_violations(page))


SCREENSHOTS = Path(os.environ.get("HUB_SCREENSHOTS") or Path(__file__).parent / "screenshots")


@pytest.mark.parametrize("width", [360, 1280])
def test_pages_fit_a_phone_and_a_desktop(live, browser, width):
    """Each page this hub shows customers and admins, at a phone's and a desktop's
    width: nothing wider than the screen. Screenshots go to tests/screenshots/."""
    app, base = live
    _, token, unsubscribe = new_links(app)
    context = browser.new_context(viewport={"width": width, "height": 800})
    page = context.new_page()
    page.add_init_script(HIDDEN_TAB)
    SCREENSHOTS.mkdir(exist_ok=True)
    shown = {}

    def look(name: str) -> None:
        shown[name] = page.evaluate("() => document.documentElement.scrollWidth")
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)

    page.goto(f"{base}/r/{token}/9")
    look("rating")
    page.get_by_role("button").click()
    page.wait_for_url(f"{base}/r/{token}/comment")
    look("comment")
    page.goto(f"{base}/r/{token}x/9")
    look("link-invalid")
    page.goto(f"{base}/u/{unsubscribe}")
    look("unsubscribe")
    page.goto(f"{base}/login")
    for _ in range(11):  # the eleventh attempt is refused with the time to wait
        page.fill("input[name=email]", "someone@example.com")
        page.fill("input[name=password]", "a guess")
        page.get_by_role("button", name="Sign in").click()
    assert "Too many sign-in attempts" in page.content()
    look("login-too-many")
    context.close()
    assert all(scroll <= width for scroll in shown.values()), shown
