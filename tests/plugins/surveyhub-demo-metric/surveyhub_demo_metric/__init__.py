"""A third-party metric plugin: "Effort stars", a 5-point effort rating."""

from hub import hookimpl
from hub.contracts import Metric


@hookimpl
def register_metrics():
    return [Metric("effort-stars", "Effort stars", (5,), 5, "How easy was it?")]
