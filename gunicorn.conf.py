"""gunicorn settings for SurveyHub's web process.

`gunicorn wsgi:app` run from this folder reads this file by itself (elsewhere:
`gunicorn -c /path/to/gunicorn.conf.py wsgi:app`). Environment variables tune it:

- `HUB_BIND`: address to listen on (default `127.0.0.1:8000`, behind your https proxy;
  `0.0.0.0:$PORT` when only `PORT` is set, as platforms that run a Procfile do);
- `WEB_CONCURRENCY`: worker processes (default 2 x CPU cores + 1, at most 12: each
  worker holds its own database connections);
- `HUB_WEB_TIMEOUT`: seconds one request may take before its worker is replaced
  (default 300: a dry run reads the helpdesk, an export streams every rating);
- `HUB_WEB_GRACEFUL_TIMEOUT`: seconds running requests get to finish on a restart or
  reload (default 120);
- `HUB_WEB_CONTROL_SOCKET`: a path for gunicorn's control socket (`gunicornc`); off by
  default.

Command-line options and `GUNICORN_CMD_ARGS` override everything here.

Reload without dropping a request: `kill -HUP <master pid>` (`systemctl reload
surveyhub-web`) starts workers on the new code and settings, then stops the old ones
gracefully. The access log goes to stdout without query strings, and link tokens are
shown as `<token>` (`hub.accesslog`).
"""

from __future__ import annotations

import os


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use (containers)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _positive(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, not {raw!r}.") from None
    if value < 1:
        raise SystemExit(f"{name} must be at least 1, not {value}.")
    return value


def _bind() -> str:
    if os.environ.get("HUB_BIND"):
        return os.environ["HUB_BIND"]
    if os.environ.get("PORT"):
        return f"0.0.0.0:{os.environ['PORT']}"
    return "127.0.0.1:8000"


bind = [address.strip() for address in _bind().split(",") if address.strip()]
workers = _positive("WEB_CONCURRENCY", min(2 * _cores() + 1, 12))
worker_class = "sync"
timeout = _positive("HUB_WEB_TIMEOUT", 300)
graceful_timeout = _positive("HUB_WEB_GRACEFUL_TIMEOUT", 120)
# Replace each worker after about ten thousand requests (jittered, so they do not all
# restart at once): a slow leak in a plugin never grows without bound. Not much sooner:
# a new worker costs about 2 s of CPU (imports, create_app); replaced every thousand
# requests, starting workers took a third or more of a busy web process's CPU
# (docs/performance.md, rating capture).
max_requests = 10000
max_requests_jitter = 1000

# gunicorn 25+ opens a control socket for `gunicornc` in $HOME by default, one path
# for every gunicorn of that user; signals and systemctl do the same job. Set
# HUB_WEB_CONTROL_SOCKET to a path of this instance's own to have it.
control_socket_disable = not os.environ.get("HUB_WEB_CONTROL_SOCKET")
if os.environ.get("HUB_WEB_CONTROL_SOCKET"):
    control_socket = os.environ["HUB_WEB_CONTROL_SOCKET"]

accesslog = "-"
errorlog = "-"
logger_class = "hub.accesslog.RedactingLogger"
# No %(r)s, %(q)s or full URLs: link tokens and query strings stay out of the log.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s"'


def child_exit(server, worker):
    """Let prometheus-client's multiprocess mode forget a worker that stopped."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    try:
        from prometheus_client import multiprocess
    except ImportError:
        return
    multiprocess.mark_process_dead(worker.pid)
