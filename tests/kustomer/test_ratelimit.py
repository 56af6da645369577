"""The request budget shared by every worker through a real Redis."""

from __future__ import annotations

import pytest
import responses

from hub.helpdesk import RateLimited
from surveyhub_kustomer.client import KustomerClient
from surveyhub_kustomer.ratelimit import RateBudget
from tests.kustomer.clock import Clock
from tests.kustomer.payloads import BASE

START = 1_800_000_000.0  # a minute boundary


@pytest.fixture
def clock():
    return Clock(START)


def client(redis_client, clock, name="conn-1"):
    budget = RateBudget(redis_client, name, clock=clock)
    return KustomerClient(BASE, "key", budget, sleep=clock.sleep, clock=clock, max_wait=120)


@responses.activate
def test_two_workers_share_one_budget(redis_client, clock):
    responses.get(f"{BASE}/users/u1", json={"data": {}}, headers={"x-ratelimit-limit": "10"})
    first, second = client(redis_client, clock), client(redis_client, clock)
    first.request("GET", "/users/u1", need="user.read")  # learns the org's limit: 10
    for n in range(8):
        (first if n % 2 else second).request("GET", "/users/u1", need="user.read")
    assert clock.slept == []  # 9 requests: the budget keeps 10% in reserve
    second.request("GET", "/users/u1", need="user.read")
    assert clock.slept == [60.0]  # the 10th waits for the next minute, whichever worker


@responses.activate
def test_searches_have_their_own_smaller_budget(redis_client, clock):
    responses.post(
        f"{BASE}/customers/search",
        json={"data": [], "links": {}},
        headers={"x-ratelimit-limit": "2000"},
    )
    worker = client(redis_client, clock)
    for _ in range(90):
        worker.request("POST", "/customers/search", need="search", json={}, search=True)
    assert clock.slept == []
    worker.request("POST", "/customers/search", need="search", json={}, search=True)
    assert clock.slept == [60.0]


@responses.activate
def test_a_429_stops_every_worker_until_the_reset(redis_client, clock):
    responses.get(
        f"{BASE}/users/u1",
        status=429,
        json={"errors": [{"code": "too_many_requests"}]},
        headers={"x-ratelimit-reset": str(int(START + 30))},
    )
    responses.get(f"{BASE}/users/u1", json={"data": {}})
    responses.get(f"{BASE}/users/u2", json={"data": {}})
    first, second = client(redis_client, clock), client(redis_client, clock)
    first.request("GET", "/users/u1", need="user.read")
    assert clock.slept == [30.0]
    clock.now = START + 5  # the other worker, 5 s after the 429:
    second.request("GET", "/users/u2", need="user.read")
    assert clock.slept == [30.0, 25.0]  # it waited without calling Kustomer
    assert [c.request.url.rsplit("/", 1)[1] for c in responses.calls] == ["u1", "u1", "u2"]


@responses.activate
def test_budgets_of_two_orgs_are_separate(redis_client, clock):
    responses.get(
        f"{BASE}/users/u1",
        status=429,
        json={"errors": [{"code": "too_many_requests"}]},
        headers={"x-ratelimit-reset": str(int(START + 600))},
    )
    with pytest.raises(RateLimited):
        client(redis_client, clock, "conn-1").request("GET", "/users/u1", need="user.read")
    responses.replace(responses.GET, f"{BASE}/users/u1", json={"data": {}})
    client(redis_client, clock, "conn-2").request("GET", "/users/u1", need="user.read")


@responses.activate
def test_when_other_tools_used_the_minute_everyone_here_waits(redis_client, clock):
    responses.get(
        f"{BASE}/users/u1",
        json={"data": {}},
        headers={"x-ratelimit-limit": "300", "x-ratelimit-remaining": "12"},
    )
    responses.get(f"{BASE}/users/u2", json={"data": {}})
    first, second = client(redis_client, clock), client(redis_client, clock)
    clock.now = START + 20
    first.request("GET", "/users/u1", need="user.read")  # 12 left of 300: under the reserve
    second.request("GET", "/users/u2", need="user.read")
    assert clock.slept == [40.0]  # waited for the next minute before calling Kustomer
