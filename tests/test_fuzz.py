"""Fuzzing every public and webhook route: no input makes the hub answer 5xx.

Hypothesis drives random methods, paths (real tokens, damaged ones, junk), headers and
bodies, and validly signed webhook bodies of random shape, at least 5,000 requests per
database. With TESTING on, an unhandled exception fails the test instead of becoming a
500 page, so nothing hides behind the friendly error page.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from hub.extensions import db
from hub.links import rating_token
from hub.links import unsubscribe_token
from hub.models import Connection
from tests.conftest import add_delivery

pytestmark = pytest.mark.slow

EXAMPLES = 2500  # two requests each: 5,000 per database
WEBHOOK_TOKEN = "fuzz-webhook-token"
METHODS = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
TEXT = st.text(st.characters(codec="utf-8"), max_size=80)
JUNK = st.one_of(TEXT, st.sampled_from(["", "..", "%00", "%ff", "🙂", "a" * 300, "\x00"]))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
#: Integers where databases and converters change their minds.
BOUNDARIES = [0, -1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 10**20, -(2**63) - 1]
EVENT_KEYS = st.sampled_from(
    ["id", "name", "data", "dataId", "changes", "meta", "attributes", "status", "lastDone"]
)


@pytest.fixture
def targets(app):
    with app.app_context():
        delivery = add_delivery()
        connection = Connection(helpdesk="kustomer", name="Fuzz", settings={"url": "acme"})
        connection.set_secrets({"api_key": "k", "webhook_token": WEBHOOK_TOKEN})
        db.session.add(connection)
        db.session.commit()
        with app.test_request_context():
            return {
                "rating": rating_token(delivery.id),
                "unsubscribe": unsubscribe_token(delivery.id),
                "connection": connection.id,
            }


def paths(targets):
    rating, unsubscribe = targets["rating"], targets["unsubscribe"]
    token = st.one_of(
        st.just(rating),
        JUNK.map(lambda junk: rating + junk),
        JUNK.map(lambda junk: rating[:-3] + junk),
        JUNK,
    )
    number = st.one_of(st.integers(-(10**30), 10**30), st.sampled_from(BOUNDARIES)).map(str)
    score = st.one_of(number, JUNK)
    connection = st.one_of(st.just(str(targets["connection"])), number, JUNK)
    return st.one_of(
        st.tuples(token, score).map(lambda p: f"/r/{p[0]}/{p[1]}"),
        token.map(lambda t: f"/r/{t}/comment"),
        token.map(lambda t: f"/r/{t}/thanks"),
        st.one_of(st.just(unsubscribe), JUNK).map(lambda t: f"/u/{t}"),
        connection.map(lambda c: f"/hooks/kustomer/{c}"),
        JUNK.map(lambda t: f"/setup/{t}"),
        st.sampled_from(["/login", "/healthz", "/readyz", "/", "/logout"]),
        JUNK.map(lambda j: "/" + j),
    )


def body():
    form = st.dictionaries(
        st.sampled_from(["comment", "auto", "email", "password", "csrf_token", "x"]),
        st.one_of(TEXT, st.just("\x00" * 5), st.text(max_size=6000)),
        max_size=4,
    )
    return st.one_of(
        form.map(lambda f: ("application/x-www-form-urlencoded", f)),
        st.binary(max_size=2000).map(lambda b: ("application/octet-stream", b)),
        JSON.map(lambda j: ("application/json", json.dumps(j).encode())),
        st.binary(max_size=300).map(lambda b: ("multipart/form-data; boundary=x", b)),
    )


def signed(raw: bytes) -> dict:
    signature = hmac.new(WEBHOOK_TOKEN.encode(), raw, hashlib.sha256).hexdigest()
    return {"X-Kustomer-Webhook-Signature": signature, "Content-Type": "application/json"}


def event_like():
    """Kustomer envelopes with random values in the places the receiver reads."""
    value = st.one_of(JSON, st.just("done"), st.just("kustomer.conversation.update"))
    return st.fixed_dictionaries(
        {"name": st.one_of(st.just("kustomer.conversation.update"), value)},
        optional={
            "id": value,
            "dataId": value,
            "data": st.one_of(
                value,
                st.fixed_dictionaries(
                    {},
                    optional={
                        "id": value,
                        "attributes": st.one_of(
                            value,
                            st.fixed_dictionaries(
                                {},
                                optional={
                                    "status": value,
                                    "lastDone": st.one_of(
                                        value, st.dictionaries(st.just("createdAt"), value)
                                    ),
                                },
                            ),
                        ),
                    },
                ),
            ),
            "changes": st.one_of(
                value,
                st.fixed_dictionaries(
                    {},
                    optional={
                        "attributes": st.one_of(
                            value,
                            st.dictionaries(
                                st.just("status"),
                                st.one_of(value, st.dictionaries(st.just("after"), value)),
                            ),
                        )
                    },
                ),
            ),
        },
    ) | st.dictionaries(EVENT_KEYS, value, max_size=5)


def test_no_input_makes_the_hub_answer_5xx(app, targets, redis_client):
    # Past CSRF, so the forms' own handling of what they get is fuzzed too.
    app.config["WTF_CSRF_ENABLED"] = False
    client = app.test_client()
    hook = f"/hooks/kustomer/{targets['connection']}"
    statuses: list[int] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        method=METHODS,
        path=paths(targets),
        payload=body(),
        headers=st.dictionaries(
            st.sampled_from(
                [
                    "X-Kustomer-Webhook-Signature",
                    "Accept-Language",
                    "Cookie",
                    "Referer",
                    "X-Forwarded-For",
                ]
            ),
            st.text(st.characters(codec="latin-1", exclude_categories=["Cc"]), max_size=60),
            max_size=3,
        ),
        event=event_like(),
    )
    def one(method, path, payload, headers, event):
        content_type, data = payload
        response = client.open(
            path,
            method=method,
            data=data,
            headers={"Content-Type": content_type, **headers},
        )
        statuses.append(response.status_code)
        raw = json.dumps(event).encode()
        response = client.post(hook, data=raw, headers=signed(raw))
        statuses.append(response.status_code)

    one()
    assert len(statuses) >= 5000
    assert [s for s in statuses if s >= 500] == []
