"""A plugin whose import fails, as a plugin built for another SurveyHub version might."""

from hub.contracts import NoSuchThing  # noqa: F401
