"""Languages: German pages and emails from the catalogs, and the catalogs kept complete."""

from __future__ import annotations

import io

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from hub.app import PACKAGE_DIR
from hub.emails import build_email
from hub.emails import recipient_of
from hub.i18n import LANGUAGES
from hub.i18n import survey_language
from hub.links import rating_token
from tests.conftest import ROOT
from tests.conftest import add_delivery

CATALOGS = PACKAGE_DIR / "translations"


@pytest.mark.parametrize(
    ("setting", "locale", "expected"),
    [
        ("auto", "de_DE", "de"),
        ("auto", "de-AT", "de"),
        ("auto", "en_us", "en"),
        ("auto", "fr", "en"),
        ("auto", None, "en"),
        ("de", "en_us", "de"),
        ("en", "de", "en"),
    ],
)
def test_survey_language(setting, locale, expected):
    assert survey_language(setting, locale) == expected


def test_rating_page_renders_in_the_customers_language(app, client):
    with app.app_context():
        delivery_id = add_delivery(locale="de_DE").id
    with app.test_request_context():
        token = rating_token(delivery_id)
    page = client.get(f"/r/{token}/10")
    assert '<html lang="de">' in page.text
    assert "Ihre Wahl:" in page.text
    assert "Äußerst wahrscheinlich" in page.text
    client.post(f"/r/{token}/10")
    assert "Ihre Antwort ist gespeichert" in client.get(f"/r/{token}/comment").text


def test_survey_language_setting_wins_over_the_customer_locale(app, client):
    with app.app_context():
        delivery_id = add_delivery(locale="en_us", language="de").id
    with app.test_request_context():
        token = rating_token(delivery_id)
    assert "Antwort senden" in client.get(f"/r/{token}/3").text


def test_email_in_german(app):
    with app.app_context():
        delivery = add_delivery(metric="ces", scale=7, locale="de")
        message = build_email(delivery.survey, recipient_of(delivery))
    text = message.get_body(("plain",)).get_content()
    assert message["Subject"] == "Wie waren wir?"
    assert message["Content-Language"] == "de"
    assert "Acme hat es mir leicht gemacht, mein Anliegen zu erledigen." in text
    assert "Stimme voll und ganz zu" in text


def source_messages() -> set[str]:
    ids = set()
    method_map = [
        ("hub/**.py", "python"),
        ("plugins/metrics/**.py", "python"),
        ("templates/**.html", "jinja2"),
        ("templates/**.txt", "jinja2"),
    ]
    keywords = {"_": None, "gettext": None, "N_": None}
    for _, _, message, _, _ in extract_from_dir(ROOT, method_map, keywords=keywords):
        ids.add(message if isinstance(message, str) else message[0])
    return ids


@pytest.mark.parametrize("language", [lang for lang in LANGUAGES if lang != "en"])
def test_catalog_translates_every_message(language):
    with open(CATALOGS / language / "LC_MESSAGES" / "messages.po", "rb") as handle:
        catalog = read_po(handle)
    translated = {m.id for m in catalog if m.id and m.string}
    missing = source_messages() - translated
    assert not missing, f"untranslated in {language}: {sorted(missing)} (see docs/translating.md)"


@pytest.mark.parametrize("language", [lang for lang in LANGUAGES if lang != "en"])
def test_compiled_catalog_matches_its_source(language):
    folder = CATALOGS / language / "LC_MESSAGES"
    with open(folder / "messages.po", "rb") as handle:
        source = read_po(handle)
    with open(folder / "messages.mo", "rb") as handle:
        compiled = read_mo(handle)
    expected = io.BytesIO()
    write_mo(expected, source)
    expected.seek(0)
    fresh = read_mo(expected)
    assert _entries(compiled) == _entries(fresh)


def _entries(catalog) -> dict:
    """Message ids and strings; plural forms (lists in a compiled catalog) as tuples."""

    def frozen(value):
        return tuple(value) if isinstance(value, list | tuple) else value

    return {frozen(m.id): frozen(m.string) for m in catalog if m.id}
