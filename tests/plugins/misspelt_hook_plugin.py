"""A throwaway plugin with a misspelt hook name (register_metric instead of register_metrics)."""

from hub import hookimpl
from tests.plugins.simple_metric import make_metric


@hookimpl
def register_metric():
    return [make_metric("typo", "Typo")]
