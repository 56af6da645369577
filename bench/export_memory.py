"""Memory of a streamed ratings export: the web process's RSS growth while it streams.

Run: .venv/bin/python bench/export_memory.py [ratings]   (default 1,000,000)

Fills a fresh PostgreSQL schema (DATABASE_URL, else the local `test` database) with
`ratings` ratings by SQL, serves the hub with gunicorn (one sync worker, as production
does), warms the worker up with a small export, then downloads
`GET /api/v1/ratings/export.ndjson` and `export.csv` in full while sampling the
worker's resident memory. Prints the rows read, the worker's RSS before and at its peak,
and as the last line the growth against the 50 MiB budget (goal: ratio < 1).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MIB  # noqa: E402
from _common import bench_app  # noqa: E402
from _common import gunicorn  # noqa: E402
from _common import load_ratings  # noqa: E402
from _common import postgres_schema  # noqa: E402

BUDGET_MIB = 50


def fill(url: str, ratings: int, workdir: Path) -> tuple[dict[str, str], str]:
    """Migrate, add an admin with a read token, a survey and `ratings` rated deliveries;
    return the environment for gunicorn and the token."""
    app, env = bench_app(url, workdir, HUB_API_RATE_LIMIT="100000 per minute")
    from hub.extensions import db
    from hub.models import Connection
    from hub.models import Survey
    from hub.models import User
    from hub.tokens import create_token

    with app.app_context():
        admin = User(email="admin@example.com", role="admin", status="active")
        connection = Connection(helpdesk="kustomer", name="acme", settings={})
        survey = Survey(connection=connection, metric="nps", scale=11, name="NPS")
        db.session.add_all([admin, connection, survey])
        db.session.commit()
        token = create_token(admin, "bench", "read")[1]
        survey_id = survey.id
    # Realistic rows: an address, an agent, a comment of a sentence or so.
    load_ratings(url, [survey_id], ratings)
    return env, token


class Peak:
    """Samples a process's RSS every few milliseconds until stopped."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def download(url: str, token: str) -> int:
    """Read a streamed export to the end; the number of lines."""
    lines = 0
    headers = {"Authorization": f"Bearer {token}"}
    with requests.get(url, headers=headers, stream=True, timeout=600) as response:
        response.raise_for_status()
        for chunk in response.iter_content(chunk_size=65536):
            lines += chunk.count(b"\n")
    return lines


def main() -> None:
    ratings = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with postgres_schema() as url, tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        env, token = fill(url, ratings, Path(tmp))
        print(f"filled {ratings} ratings in {time.monotonic() - started:.1f} s")
        with gunicorn(env, Path(tmp) / "gunicorn.log") as (base, pid):
            api = f"{base}/api/v1/ratings"
            worker = psutil.Process(pid)
            # Warm-up: every module, template and connection a full export uses.
            download(f"{api}/export.ndjson?from=2999-01-01", token)
            download(f"{api}/export.csv?from=2999-01-01", token)
            before = worker.memory_info().rss
            results = []
            for kind in ("ndjson", "csv"):
                started = time.monotonic()
                with Peak(worker.pid) as peak:
                    lines = download(f"{api}/export.{kind}", token)
                seconds = time.monotonic() - started
                results.append((kind, lines, peak.peak, seconds))
        for kind, lines, top, seconds in results:
            print(
                f"{kind}: {lines} lines in {seconds:.1f} s "
                f"({lines / max(seconds, 1e-9):,.0f} rows/s); worker RSS "
                f"{before / MIB:.1f} MiB before, {top / MIB:.1f} MiB at peak "
                f"(+{(top - before) / MIB:.1f} MiB)"
            )
        growth = max(top for _, _, top, _ in results) - before
        print(f"growth +{growth / MIB:.1f} MiB, budget {BUDGET_MIB} MiB")
        print(f"ratio {growth / MIB / BUDGET_MIB:.2f}")


if __name__ == "__main__":
    main()
