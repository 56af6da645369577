"""The Kustomer URL an admin types becomes the org's API base, and nothing else does."""

from __future__ import annotations

import pytest

from surveyhub_kustomer.urls import InvalidKustomerUrl
from surveyhub_kustomer.urls import api_base


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("acme", "https://acme.api.kustomerapp.com/v1"),
        ("ACME", "https://acme.api.kustomerapp.com/v1"),
        ("acme.kustomerapp.com", "https://acme.api.kustomerapp.com/v1"),
        ("https://acme.kustomerapp.com", "https://acme.api.kustomerapp.com/v1"),
        ("https://acme.kustomerapp.com/app/customers/123", "https://acme.api.kustomerapp.com/v1"),
        ("https://acme.api.kustomerapp.com/v1", "https://acme.api.kustomerapp.com/v1"),
        ("https://acme.api.kustomerapp.com", "https://acme.api.kustomerapp.com/v1"),
        (" https://acme-eu.kustomerapp.com/ ", "https://acme-eu.api.kustomerapp.com/v1"),
        ("https://api.kustomerapp.com", "https://api.kustomerapp.com/v1"),
        ("https://api.prod2.kustomerapp.com/v1", "https://api.prod2.kustomerapp.com/v1"),
        ("api.prod4.kustomerapp.com", "https://api.prod4.kustomerapp.com/v1"),
    ],
)
def test_accepted_forms_normalise(given, expected):
    assert api_base(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        "http://169.254.169.254",
        "http://169.254.169.254/latest/meta-data",
        "https://evil.com",
        "https://kustomerapp.com.evil.com",
        "https://acme.kustomerapp.com.evil.com",
        "https://evil.com/acme.kustomerapp.com",
        "https://acme.kustomerapp.com@evil.com",
        "https://user:pw@acme.kustomerapp.com",
        "http://acme.kustomerapp.com",
        "https://acme.kustomerapp.com:8443",
        "https://kustomerapp.com",
        "https://www.kustomerapp.com",
        "https://a.b.kustomerapp.com",
        "https://127.0.0.1:8900",
        "http://localhost:8900",
        "https://[::1]/",
        "file:///etc/passwd",
        "https://acme_corp.kustomerapp.com",
        "",
    ],
)
def test_other_hosts_are_refused_with_a_message(given):
    with pytest.raises(InvalidKustomerUrl) as info:
        api_base(given)
    assert "kustomerapp.com" in str(info.value)


def test_allow_list_admits_the_sandbox():
    allowed = ["http://127.0.0.1:8900"]
    assert api_base("http://127.0.0.1:8900", allowed) == "http://127.0.0.1:8900/v1"
    assert api_base("http://127.0.0.1:8900/v1/", allowed) == "http://127.0.0.1:8900/v1"
    with pytest.raises(InvalidKustomerUrl):
        api_base("http://127.0.0.1:8901", allowed)
    with pytest.raises(InvalidKustomerUrl):
        api_base("https://127.0.0.1:8900", allowed)


def test_a_bare_word_only_ever_means_a_kustomer_org():
    assert api_base("localhost") == "https://localhost.api.kustomerapp.com/v1"
