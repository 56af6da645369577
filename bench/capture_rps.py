"""Rating capture under load: the rating page (GET) and the answer (POST) of the hub,
against a hello-world route and a minimal hand-written route, on gunicorn and PostgreSQL.

Run: .venv/bin/python bench/capture_rps.py [seconds] [rounds]   (default 3 and 3)

Fills a fresh PostgreSQL schema (DATABASE_URL, else the local `test` database) with one
NPS survey and its sent deliveries, makes their rating links with the hub's own
`rating_token`, and serves three apps side by side, each with the repository's
`gunicorn.conf.py` (the same worker count and class, as production runs them):

- the hub (`wsgi:app`, production settings: a 120-second write-back grace);
- `hello`: a hello-world Flask route (the ceiling; `bench/_capture_hello.py`);
- `floor`: a minimal hand-written Flask route doing the same token check, one SQL lookup
  and the same template; for the POST, one lookup and the rating and its write-back row
  in one transaction (the floor a framework allows; `bench/_capture_baseline.py`).

wrk (`bench/_capture.lua`, 2 connections per worker) drives each from outside for
`seconds`, `rounds` times, the apps interleaved (the order reversed every other round,
so a busy moment of the machine does not fall on one app only):

- GET: views of links already opened, spread over 2,000 deliveries (what the floor does);
- GET first view (the hub only): links never opened; the hub also records `opened_at`;
- POST: the page's own form (`auto=1`), each recording the first rating of a delivery
  never rated, as a customer's answer does.

It prints requests/s, p50 and p99 latency (the mean over the rounds) and the CPU time
per request of each app's gunicorn workers and of its database sessions; checks every
answer (all 200, or 303 for an answer; each answered POST's delivery has exactly one
rating, and only POSTs cut off when wrk stopped add any); and prints the ratios
hub/hand-written and hub/hello for GET and POST. The last line is the worst of those
four ratios over its goal (GET: >= 0.9 hand-written, >= 0.35 hello; POST: >= 0.9,
>= 0.2): 1 or more when every goal is met.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from functools import cache
from pathlib import Path

import psutil
from sqlalchemy import text

from hub.embedded import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT  # noqa: E402
from _common import bench_app  # noqa: E402
from _common import postgres_schema  # noqa: E402
from _common import redis_server  # noqa: E402
from _common import wait_for  # noqa: E402

BENCH = ROOT / "bench"
APPS = {"hello": "_capture_hello:hello", "floor": "_capture_baseline:floor", "hub": "wsgi:app"}
KINDS = ("GET", "GET first view", "POST")
#: Links viewed over and over by the GET runs.
VIEWS = 2000
#: Links per POST (or first-view) run and second: more than any app answers here.
PER_SECOND = 4000
THREADS = 2
GOALS = {
    ("GET", "floor"): 0.9,
    ("GET", "hello"): 0.35,
    ("POST", "floor"): 0.9,
    ("POST", "hello"): 0.2,
}


@dataclass
class Run:
    """One wrk run's numbers."""

    app: str
    kind: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    errors: dict[str, int]
    wrapped: int
    answered: list[str] = field(repr=False)
    #: CPU seconds of the app's gunicorn workers and of its database sessions.
    app_cpu: float = 0.0
    db_cpu: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


@dataclass
class Server:
    """One app under gunicorn."""

    name: str
    base: str
    process: subprocess.Popen

    def cpu(self, app) -> tuple[float, dict[int, float]]:
        """CPU seconds so far of the workers (those the master replaced included), and
        of each database session now open for them (by `application_name`)."""
        from hub.extensions import db

        master = psutil.Process(self.process.pid)
        times = master.cpu_times()
        workers = times.children_user + times.children_system
        for child in master.children():
            with contextlib.suppress(psutil.Error):
                used = child.cpu_times()
                workers += used.user + used.system
        with app.app_context():
            query = text("SELECT pid FROM pg_stat_activity WHERE application_name = :name")
            pids = db.session.execute(query, {"name": f"bench-{self.name}"}).scalars().all()
            db.session.remove()
        database = {}
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                used = psutil.Process(pid).cpu_times()
                database[pid] = used.user + used.system
        return workers, database


def fill(app, links: dict[str, int]) -> dict[str, list[int]]:
    """An NPS survey with the deliveries of each named pool of links (sent; opened,
    except in the `first…` pools); the delivery ids of each pool."""
    from hub.extensions import db
    from hub.models import Connection
    from hub.models import Survey

    pools, first = {}, 1
    with app.app_context():
        connection = Connection(helpdesk="kustomer", name="acme", settings={})
        survey = Survey(
            connection=connection, metric="nps", scale=11, name="NPS",
            settings={"company_name": "Acme"}, active=True,
        )  # fmt: skip
        db.session.add_all([connection, survey])
        db.session.commit()
        insert = text(
            "INSERT INTO deliveries (id, survey_id, ticket_id, requester_email, requester_name, "
            "agent_ref, state, error, attempts, created_at, updated_at, sent_at, opened_at) "
            "SELECT n, :survey, 'ticket-' || n, 'customer' || n || '@example.com', "
            "'Customer ' || n, 'agent-' || (n % 40), 'sent', '', 1, now(), now(), now(), "
            "CASE WHEN CAST(:opened AS boolean) THEN now() END "
            "FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS n"
        )
        for name, count in links.items():
            db.session.execute(
                insert,
                {"survey": survey.id, "first": first, "last": first + count - 1,
                 "opened": not name.startswith("first")},
            )  # fmt: skip
            pools[name] = list(range(first, first + count))
            first += count
        db.session.execute(text("SELECT setval('deliveries_id_seq', :n)"), {"n": first})
        db.session.commit()
        db.session.execute(text("ANALYZE deliveries"))
        db.session.commit()
    return pools


def write_tokens(app, pools: dict[str, list[int]], folder: Path) -> dict[str, int]:
    """Each pool's rating links in a file (`<pool>.tokens`); token -> delivery id."""
    from hub.links import rating_token

    ids = {}
    with app.test_request_context():
        for name, deliveries in pools.items():
            tokens = [rating_token(delivery) for delivery in deliveries]
            ids.update(zip(tokens, deliveries, strict=True))
            (folder / f"{name}.tokens").write_text("\n".join(tokens) + "\n")
    return ids


@contextlib.contextmanager
def serve(env: dict[str, str], folder: Path) -> Iterator[dict[str, Server]]:
    """The three apps under gunicorn with the repository's gunicorn.conf.py, started
    together; each one's database sessions are named `bench-<app>`."""
    servers: dict[str, Server] = {}
    try:
        for name, target in APPS.items():
            port = free_port()
            mine = {**env, "HUB_BIND": f"127.0.0.1:{port}"}
            mine.pop("WEB_CONCURRENCY", None)  # the production default: 2 x cores + 1
            mine["DATABASE_URL"] += f"&application_name=bench-{name}"
            with (folder / f"{name}.log").open("ab") as out:
                process = subprocess.Popen(
                    [str(Path(sys.executable).parent / "gunicorn"),
                     "-c", str(ROOT / "gunicorn.conf.py"), "--pythonpath", str(BENCH), target],
                    cwd=ROOT, env=mine, stdout=out, stderr=out,
                )  # fmt: skip
            servers[name] = Server(name, f"http://127.0.0.1:{port}", process)
        for server in servers.values():
            wait_for(f"{server.base}/", timeout=120)
        yield servers
    finally:
        for server in servers.values():
            server.process.send_signal(signal.SIGTERM)
        for server in servers.values():
            server.process.wait(timeout=60)


@cache
def connections() -> int:
    """Two connections per gunicorn worker (as many workers as gunicorn.conf.py starts)."""
    spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "gunicorn.conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return 2 * conf.workers


def wrk(server: Server, kind: str, tokens: Path, seconds: float, folder: Path, app) -> Run:
    """Drive one app with wrk for `seconds`; its numbers."""
    method = "GET" if kind.startswith("GET") else "POST"
    mode = "cycle" if kind == "GET" else "once"
    out = folder / f"{server.name}-{method}-{time.monotonic_ns()}.json"
    before = server.cpu(app)
    subprocess.run(
        ["wrk", f"-t{THREADS}", f"-c{connections()}", f"-d{max(1, round(seconds))}s",
         "--timeout", "30s", "-s", str(BENCH / "_capture.lua"), server.base,
         "--", method, str(tokens), str(out), str(THREADS), mode],
        check=True, stdout=subprocess.DEVNULL, timeout=seconds + 120,
    )  # fmt: skip
    after = server.cpu(app)
    numbers = json.loads(out.read_text())
    return Run(
        app=server.name,
        kind=kind,
        requests=numbers["requests"],
        seconds=numbers["duration_us"] / 1e6,
        p50_ms=numbers["p50_us"] / 1000,
        p99_ms=numbers["p99_us"] / 1000,
        statuses={int(k): v for k, v in numbers["statuses"].items()},
        errors=numbers["errors"],
        wrapped=numbers["wrapped"],
        answered=numbers["answered"],
        app_cpu=after[0] - before[0],
        # Sessions opened during the run count in full (one closed meanwhile is lost).
        db_cpu=sum(used - before[1].get(pid, 0.0) for pid, used in after[1].items()),
    )


def check(run: Run, expected: int, ids: dict[str, int], pool: list[int], app) -> str:
    """Every answer as expected; for a POST, each answered delivery has its rating (and
    only POSTs cut off when wrk stopped add any); for a first view, each is opened.
    Stops the benchmark when not; else a sentence about what was checked."""
    from hub.extensions import db

    problems = []
    wrong = {status: n for status, n in run.statuses.items() if status != expected}
    if wrong:
        problems.append(f"statuses other than {expected}: {wrong}")
    if any(run.errors.values()):
        problems.append(f"socket errors: {run.errors}")
    counted = run.statuses.get(expected, 0)
    if not counted:
        problems.append("no answer at all")
    if run.kind == "GET" or run.app == "hello":
        if problems:
            raise SystemExit(f"{run.app} {run.kind}: " + "; ".join(problems))
        return f"{counted} x {expected}"
    if run.wrapped:
        problems.append(f"more requests than links ({len(pool)}): raise PER_SECOND")
    if run.kind == "POST":
        query = "SELECT delivery_id FROM ratings WHERE delivery_id BETWEEN :a AND :b"
    else:
        query = "SELECT id FROM deliveries WHERE opened_at IS NOT NULL AND id BETWEEN :a AND :b"
    with app.app_context():
        done = set(db.session.execute(text(query), {"a": pool[0], "b": pool[-1]}).scalars())
        db.session.remove()
    if run.kind == "POST":
        answered = [ids.get(token) for token in run.answered]
        if None in answered or len(set(answered)) != len(answered):
            problems.append("a 303 named an unknown or repeated link")
        missing = set(answered) - done
        if missing:
            problems.append(f"{len(missing)} answered POSTs recorded no rating")
    extra = len(done) - counted
    if not 0 <= extra <= connections():
        problems.append(f"{len(done)} recorded for {counted} answered requests")
    if problems:
        raise SystemExit(f"{run.app} {run.kind}: " + "; ".join(problems))
    what = "ratings" if run.kind == "POST" else "deliveries opened"
    return f"{counted} x {expected}, {len(done)} {what} ({extra} by requests cut off at the end)"


def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit(
            "This benchmark drives the apps with wrk: install it (apt-get install wrk)."
        )
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    started = time.monotonic()
    per_run = int(PER_SECOND * max(1, round(seconds)))
    sizes = {"views": VIEWS}
    for r in range(rounds):
        sizes.update({f"first{r}": per_run, f"post-floor{r}": per_run, f"post-hub{r}": per_run})
    with (
        postgres_schema() as url,
        tempfile.TemporaryDirectory() as tmp,
        redis_server(Path(tmp)) as redis_url,
    ):
        folder = Path(tmp)
        app, env = bench_app(url, folder, REDIS_URL=redis_url)
        for key in [k for k in env if k.startswith("HUB_WRITEBACK")]:
            del env[key]  # the production default
        pools = fill(app, sizes)
        ids = write_tokens(app, pools, folder)
        print(
            f"{sum(sizes.values())} rating links, {connections()} connections, "
            f"{seconds:.0f} s per run, {rounds} rounds (setup {time.monotonic() - started:.0f} s)"
        )
        runs: list[Run] = []
        notes: list[str] = []
        with serve(env, folder) as servers:
            views = folder / "views.tokens"
            for server in servers.values():  # warm-up: every worker imports, connects
                wrk(server, "GET", views, 1, folder, app)
            for r in range(rounds):
                order = list(APPS) if r % 2 == 0 else list(reversed(APPS))
                for kind in KINDS:
                    for name in order:
                        if kind == "GET first view" and name != "hub":
                            continue
                        tokens = views
                        if kind == "GET first view":
                            tokens = folder / f"first{r}.tokens"
                        elif kind == "POST" and name != "hello":
                            tokens = folder / f"post-{name}{r}.tokens"
                        run = wrk(servers[name], kind, tokens, seconds, folder, app)
                        print(
                            f"[{time.monotonic() - started:4.0f} s] round {r + 1}, {name} "
                            f"{kind}: {run.rps:.0f} requests/s",
                            file=sys.stderr, flush=True,
                        )  # fmt: skip
                        pool = pools.get(tokens.stem, pools["views"])
                        expected = 303 if kind == "POST" and name != "hello" else 200
                        notes.append(f"{name} {kind}: {check(run, expected, ids, pool, app)}")
                        runs.append(run)
        report(runs, notes, rounds, time.monotonic() - started)


def report(runs: list[Run], notes: list[str], rounds: int, took: float) -> None:
    rates: dict[tuple[str, str], float] = {}
    print(
        f"{'app':<6} {'kind':<15} {'requests/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'CPU ms/request: app':>20} {'database':>9}"
    )
    for kind in KINDS:
        for name in APPS:
            mine = [run for run in runs if run.app == name and run.kind == kind]
            if not mine:
                continue
            rates[kind, name] = sum(run.rps for run in mine) / len(mine)
            p50 = sum(run.p50_ms for run in mine) / len(mine)
            p99 = sum(run.p99_ms for run in mine) / len(mine)
            requests = sum(run.requests for run in mine)
            app_cpu = 1000 * sum(run.app_cpu for run in mine) / requests
            db_cpu = 1000 * sum(run.db_cpu for run in mine) / requests
            print(
                f"{name:<6} {kind:<15} {rates[kind, name]:>10.0f} {p50:>8.1f} {p99:>8.1f} "
                f"{app_cpu:>20.2f} {db_cpu:>9.2f}"
            )
    for note in notes:
        print(f"checked {note}")
    worst = float("inf")
    for kind in ("GET", "POST"):
        parts = []
        for base, label in (("floor", "hand-written"), ("hello", "hello")):
            ratio = rates[kind, "hub"] / rates[kind, base]
            goal = GOALS[kind, base]
            worst = min(worst, ratio / goal)
            parts.append(f"hub/{label} {ratio:.2f} (goal >= {goal})")
        print(f"{kind}: " + ", ".join(parts))
    first = rates["GET first view", "hub"] / rates["GET", "floor"]
    print(f"GET first view: hub/hand-written view {first:.2f} (no goal)")
    print(f"({rounds} rounds; requests/s and latencies are the mean of the rounds; {took:.0f} s)")
    print(f"worst ratio over its goal (>= 1: every goal met): {worst:.2f}")
    print(f"ratio {worst:.2f}")


if __name__ == "__main__":
    main()
