"""Helpers for tests/test_topology.py: real processes in their own process groups, a
bulk-seeded Kustomer sandbox, and the counts the topology test compares."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from datetime import timedelta
from pathlib import Path

import requests
from sqlalchemy import text

from hub.extensions import db
from tests.conftest import ROOT

#: A score link in a survey email's plain text: /r/<token>/<score>.
SCORE_LINK = re.compile(r"(http://\S+/r/[A-Za-z0-9_.\-]+)/(\d+)\s")


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    on_timeout: Callable[[], str] = lambda: "",
    every: float = 0.25,
):
    """Poll `predicate` until it is truthy (return its value) or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"Timed out after {timeout:.0f} s waiting for {what}\n{on_timeout()}"
            )
        time.sleep(every)


@dataclass
class Processes:
    """Named subprocesses, each the leader of its own process group, logging to files."""

    env: dict[str, str]
    logs: Path
    running: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, *argv: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115  (the child keeps it)
        process = subprocess.Popen(
            list(argv),
            cwd=ROOT,  # as the README's production block: run from the checkout
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: killing it kills its forks too
        )
        log.close()
        self.running[name] = process
        return process

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def tails(self, lines: int = 25) -> str:
        return "\n".join(
            f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            for path in sorted(self.logs.glob("*.log"))
        )

    def alive(self, name: str) -> bool:
        process = self.running.get(name)
        return process is not None and process.poll() is None

    def kill(self, name: str) -> None:
        """SIGKILL the whole group (an RQ worker and the work horse it forked), as a
        crashed machine would: no handler runs, nothing is released."""
        process = self.running[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        """Every group still running: SIGTERM, then SIGKILL what is left after 15 s."""
        for process in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # forks left behind, too
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


def add_eligible(org, count: int, prefix: str, resolved_ago: Callable[[int], timedelta]) -> dict:
    """`count` resolved email conversations, each with a customer of its own (so the NPS
    cooldown never applies); return {address: conversation id}. One lock for all, so a
    running scan sees all of them or none."""
    agent = next(iter(org.users))
    added = {}
    with org.lock:
        for n in range(count):
            address = f"{prefix}{n}@example.com"
            customer = org.add_customer(f"{prefix.title()} {n}", [address])
            ago = resolved_ago(n)
            added[address] = org.add_conversation(
                customer, assignee=agent, updated_ago=ago, resolved_ago=ago
            )
    return added


def delivery_states(app, survey_id: int) -> Counter:
    with app.app_context():
        rows = db.session.execute(
            text("SELECT state, count(*) FROM deliveries WHERE survey_id = :s GROUP BY state"),
            {"s": survey_id},
        ).all()
        db.session.remove()
    return Counter(dict(rows))


def scalar(app, sql: str, **params):
    with app.app_context():
        value = db.session.execute(text(sql), params).scalar()
        db.session.remove()
    return value


def rows(app, sql: str, **params) -> list:
    with app.app_context():
        found = db.session.execute(text(sql), params).all()
        db.session.remove()
    return found


class MailSink:
    """An aiosmtpd handler that keeps every envelope, and nothing else.

    Not tests/conftest.py's CollectingHandler: aiosmtpd's SMTP() runs
    inspect.getmembers() on the handler for every new connection, which evaluates its
    `messages` property, parsing every email received so far. Each send job opens a
    connection, so with thousands of emails that made every job wait seconds for the
    server's greeting (quadratic in the emails sent).
    """

    def __init__(self) -> None:
        self.envelopes: list = []
        self.delay = 0.0  # seconds to hold each message before answering

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            import asyncio

            await asyncio.sleep(self.delay)
        self.envelopes.append(envelope)
        return "250 OK"


def parsed(handler) -> list:
    """The SMTP server's messages, parsed (a copy of the list: it grows meanwhile)."""
    from email import policy
    from email.parser import BytesParser

    parser = BytesParser(policy=policy.default)
    return [parser.parsebytes(envelope.content) for envelope in list(handler.envelopes)]


def score_links(messages) -> dict[str, str]:
    """{recipient: the link without its score} for each survey email."""
    links = {}
    for message in messages:
        body = message.get_body(("plain",)).get_content()
        found = SCORE_LINK.search(body)
        assert found, body[:500]
        links[message["To"].addresses[0].addr_spec] = found.group(1)
    return links


def notes_by_conversation(org) -> dict[str, list[dict]]:
    """The sandbox's notes, read in-process under its lock."""
    with org.lock:
        return {cid: [n["attributes"] for n in notes] for cid, notes in org.notes.items() if notes}


def check_metrics_match(base_url: str, app, survey_id: int) -> str:
    """GET {base_url}/metrics from gunicorn (two web workers) and check, parsed with
    prometheus-client's own parser, that deliveries by state and skip reason, ratings by
    metric and write-backs by state equal the database's counts. Returns what matched."""
    from hub.observability import counts_from_database
    from hub.observability import counts_from_metrics

    response = requests.get(f"{base_url}/metrics", timeout=30)  # loopback: allowed
    assert response.status_code == 200, response.text[:500]
    scraped = counts_from_metrics(response.text)
    with app.app_context():
        stored = counts_from_database()
    assert scraped == stored, (scraped, stored)
    assert stored["deliveries"]["sent"] > 0 and sum(stored["ratings"].values()) > 0
    return (
        f"/metrics equals the database: {stored['deliveries']['sent']} sent, "
        f"{sum(stored['ratings'].values())} ratings, {stored['write_backs']}"
    )
