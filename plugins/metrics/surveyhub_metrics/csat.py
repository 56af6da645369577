"""Customer Satisfaction: 2, 3 or 5 points, score = % positive answers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from collections.abc import Sequence

from hub.contracts import Metric
from hub.contracts import ScalePoint
from hub.contracts import Score
from hub.i18n import N_
from surveyhub_metrics.stats import percent
from surveyhub_metrics.stats import proportion_margin

POINTS = {
    2: [ScalePoint(1, N_("Bad"), "👎"), ScalePoint(2, N_("Good"), "👍")],
    3: [
        ScalePoint(1, N_("Unhappy"), "🙁"),
        ScalePoint(2, N_("Neutral"), "😐"),
        ScalePoint(3, N_("Happy"), "🙂"),
    ],
    5: [
        ScalePoint(1, N_("Very unsatisfied"), "★"),
        ScalePoint(2, N_("Unsatisfied"), "★★"),
        ScalePoint(3, N_("Neutral"), "★★★"),
        ScalePoint(4, N_("Satisfied"), "★★★★"),
        ScalePoint(5, N_("Very satisfied"), "★★★★★"),
    ],
}
# (highest negative value, lowest positive value) per scale; values between are neutral.
THRESHOLDS = {2: (1, 2), 3: (1, 3), 5: (2, 4)}


class CSAT(Metric):
    key = "csat"
    title = "CSAT"
    scales = (2, 3, 5)
    default_scale = 3
    default_question = N_("How satisfied were you with the support you received?")
    attribute_name = "surveyhubCsatScoreNum"
    formula = "% positive answers of all answers (5-point: 4–5, 3-point: 3, 2-point: 2)"

    def points(self, scale: int) -> list[ScalePoint]:
        return list(POINTS[scale])

    def group(self, value: int, scale: int) -> str:
        negative_max, positive_min = THRESHOLDS[scale]
        if value <= negative_max:
            return "negative"
        return "positive" if value >= positive_min else "neutral"

    def score(self, values: Sequence[int], scale: int) -> Score:
        return self.score_counts(Counter(values), scale)

    def score_counts(self, answers: Mapping[int, int], scale: int) -> Score:
        counts = self.count_groups_of(answers, scale)
        n = sum(answers.values())
        return Score(
            value=percent(counts["positive"], n),
            n=n,
            margin=proportion_margin(counts["positive"], n),
            unit="%",
            formula=self.formula,
            groups=counts,
        )
