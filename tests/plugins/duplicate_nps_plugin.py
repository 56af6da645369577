"""A throwaway plugin that claims the metric key `nps`, already taken by surveyhub-metrics."""

from hub import hookimpl
from tests.plugins.simple_metric import make_metric


@hookimpl
def register_metrics():
    return [make_metric("nps", "Another NPS")]
