"""A minimal metric class for throwaway test plugins."""

from hub.contracts import Metric
from hub.contracts import ScalePoint
from hub.contracts import Score


def make_metric(key: str, title: str) -> Metric:
    """A 5-point metric with the given key, scored by its mean."""

    class Simple(Metric):
        scales = (5,)
        default_scale = 5
        default_question = "How was it?"
        attribute_name = f"{key}Num"

        def points(self, scale):
            return [ScalePoint(v, str(v)) for v in range(1, 6)]

        def group(self, value, scale):
            return "positive" if value >= 4 else "negative"

        def score(self, values, scale):
            mean = sum(values) / len(values) if values else None
            return Score(mean, len(values), None, "/5", "mean")

    Simple.key = key
    Simple.title = title
    return Simple()
