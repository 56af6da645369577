"""A throwaway plugin with a misspelt hook name (register_metric instead of register_metrics)."""

from hub import hookimpl
from hub.contracts import Metric


@hookimpl
def register_metric():
    return [Metric("typo", "Typo", (5,), 5, "?")]
