"""SurveyHub: turns resolved helpdesk tickets into surveys and writes answers back."""

import pluggy

#: Decorator for plugin hook implementations: ``@hookimpl def register_metrics(): ...``
hookimpl = pluggy.HookimplMarker("surveyhub")

__all__ = ["hookimpl"]
