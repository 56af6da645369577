"""A third-party metric plugin: "Effort stars", a 5-point rating scored by its mean."""

from hub import hookimpl
from hub.contracts import Metric
from hub.contracts import ScalePoint
from hub.contracts import Score


class EffortStars(Metric):
    key = "effort-stars"
    title = "Effort stars"
    scales = (5,)
    default_scale = 5
    default_question = "How easy was it to get help from {company}?"
    attribute_name = "effortStarsNum"

    def points(self, scale):
        return [ScalePoint(v, "★" * v) for v in range(1, 6)]

    def group(self, value, scale):
        return "negative" if value <= 2 else "neutral" if value == 3 else "positive"

    def score(self, values, scale):
        mean = sum(values) / len(values) if values else None
        return Score(mean, len(values), None, "/5", "mean of 1–5")


@hookimpl
def register_metrics():
    return [EffortStars()]
