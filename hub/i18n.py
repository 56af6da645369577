"""Languages of the customer-facing emails and pages (Flask-Babel catalogs)."""

from __future__ import annotations

from flask import g
from flask import has_request_context
from flask import request
from flask_babel import Babel

#: Languages with a complete catalog in hub/translations (English is the source).
LANGUAGES = ("en", "de")
DEFAULT_LANGUAGE = "en"

babel = Babel()


def select_locale() -> str:
    """The language of the current page: one a view chose, else the browser's best match."""
    chosen = g.get("locale")
    if chosen:
        return chosen
    if has_request_context():
        return request.accept_languages.best_match(LANGUAGES) or DEFAULT_LANGUAGE
    return DEFAULT_LANGUAGE


def survey_language(setting: str, customer_locale: str | None) -> str:
    """The language for one customer: the survey's fixed choice, or their locale if supported.

    Helpdesks report locales as `de`, `de_DE`, `de-AT` or `en_us`; the language part decides.
    """
    if setting != "auto":
        return setting
    language = (customer_locale or "").replace("-", "_").split("_")[0].lower()
    return language if language in LANGUAGES else DEFAULT_LANGUAGE


def N_(message: str) -> str:
    """Mark `message` for the catalogs without translating it now (it is translated
    where it is shown, in the customer's language)."""
    return message
