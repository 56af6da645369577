"""`/metrics` for Prometheus, and the web processes' own request counts and latencies.

Who may scrape: a client presenting `Authorization: Bearer <HUB_METRICS_TOKEN>` (when
that is set), or one whose address is in HUB_METRICS_ALLOWED_IPS (loopback by default).
A request relayed by a proxy the hub was not told of (HUB_PROXY_HOPS) needs the token:
its address is the proxy's, not the client's. Answers are never 5xx: a source that
cannot be read is reported in `surveyhub_metrics_source_up`.
"""

from __future__ import annotations

import hmac
import time
from ipaddress import ip_address
from ipaddress import ip_network

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import current_app
from flask import g
from flask import request
from prometheus_client import Counter
from prometheus_client import Histogram

from hub.observability import exposition

bp = Blueprint("metrics", __name__)

#: Web requests by endpoint (the route's name, a bounded set), method and status code.
HTTP_REQUESTS = Counter(
    "surveyhub_http_requests",
    "HTTP requests answered by the web app.",
    ["endpoint", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "surveyhub_http_request_duration_seconds",
    "Seconds the web app took to answer, by endpoint.",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Headers a proxy adds: with them, the peer address is the proxy's.
FORWARDED = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


@bp.get("/metrics")
def metrics():
    """The hub's metrics in Prometheus' text format (or OpenMetrics, when asked)."""
    refusal = refused()
    if refusal is not None:
        return refusal
    app = current_app._get_current_object()
    try:
        body, content_type = exposition(app, request.headers.get("Accept", ""))
    except Exception:  # noqa: BLE001  (a scrape must never be a 5xx)
        app.logger.exception("metrics: the scrape failed")
        body = (
            b"# HELP surveyhub_metrics_source_up Whether the scrape could read each source.\n"
            b"# TYPE surveyhub_metrics_source_up gauge\n"
            b'surveyhub_metrics_source_up{source="hub"} 0.0\n'
        )
        content_type = "text/plain; version=0.0.4; charset=utf-8"
    response = Response(body, content_type=content_type)
    response.headers["Cache-Control"] = "no-store"
    return response


def refused() -> Response | None:
    """Why this client may not scrape, as the answer to give; None when it may."""
    token = current_app.config.get("HUB_METRICS_TOKEN") or ""
    given = request.headers.get("Authorization", "")
    if token and given:
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            return None
        return _answer(401, "The metrics token is wrong.", bearer=True)
    if client_allowed():
        return None
    if token:
        return _answer(401, "Send the metrics token: Authorization: Bearer <token>.", bearer=True)
    return _answer(
        403,
        "Metrics are served to the addresses in HUB_METRICS_ALLOWED_IPS (loopback unless set) "
        "or, with HUB_METRICS_TOKEN set, to clients presenting that token.",
    )


def client_allowed() -> bool:
    """Whether the client's address is on the allow-list and truly the client's."""
    config = current_app.config
    hops = config.get("HUB_PROXY_HOPS") or config.get("HUB_TRUSTED_PROXIES") or 0
    if not hops and any(name in request.headers for name in FORWARDED):
        return False  # the peer is a proxy the hub does not know of: whose request is it?
    try:
        client = ip_address(request.remote_addr or "")
    except ValueError:
        return False  # a unix socket, or no address
    if client.version == 6 and client.ipv4_mapped:
        client = client.ipv4_mapped
    for network in config.get("HUB_METRICS_ALLOWED_IPS") or ():
        if network == "none":
            continue
        allowed = ip_network(network, strict=False)
        if client.version == allowed.version and client in allowed:
            return True
    return False


def _answer(status: int, sentence: str, bearer: bool = False) -> Response:
    response = Response(sentence + "\n", status=status, content_type="text/plain; charset=utf-8")
    if bearer:
        response.headers["WWW-Authenticate"] = 'Bearer realm="surveyhub-metrics"'
    return response


def init_request_metrics(app: Flask) -> None:
    """Count every answer and its time, by endpoint (a few microseconds a request)."""

    @app.before_request
    def _start_clock() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        started = g.pop("metrics_started", None)
        endpoint = request.endpoint or "(no route)"
        method = request.method if request.method in METHODS else "other"
        HTTP_REQUESTS.labels(endpoint, method, str(response.status_code)).inc()
        if started is not None:
            HTTP_SECONDS.labels(endpoint).observe(time.perf_counter() - started)
        return response
