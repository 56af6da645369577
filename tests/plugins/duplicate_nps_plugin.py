"""A throwaway plugin that claims the metric key `nps`, already taken by surveyhub-metrics."""

from hub import hookimpl
from hub.contracts import Metric


@hookimpl
def register_metrics():
    return [Metric("nps", "Another NPS", (11,), 11, "Would you recommend us?")]
