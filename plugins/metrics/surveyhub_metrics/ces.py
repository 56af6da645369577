"""Customer Effort Score: 1–7 agreement, score = mean (and % positive, 5–7)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from collections.abc import Sequence

from hub.contracts import Metric
from hub.contracts import ScalePoint
from hub.contracts import Score
from hub.i18n import N_
from surveyhub_metrics.stats import mean_and_margin_of
from surveyhub_metrics.stats import percent
from surveyhub_metrics.stats import proportion_margin

LABELS = (
    N_("Strongly disagree"),
    N_("Disagree"),
    N_("Somewhat disagree"),
    N_("Neither agree nor disagree"),
    N_("Somewhat agree"),
    N_("Agree"),
    N_("Strongly agree"),
)


class CES(Metric):
    key = "ces"
    title = "CES"
    scales = (7,)
    default_scale = 7
    default_question = N_("{company} made it easy for me to handle my issue.")
    attribute_name = "surveyhubCesScoreNum"
    formula = "mean of all answers on 1–7 (higher is easier); also % positive (5–7)"

    def points(self, scale: int) -> list[ScalePoint]:
        return [ScalePoint(i + 1, label) for i, label in enumerate(LABELS)]

    def group(self, value: int, scale: int) -> str:
        if value <= 3:
            return "negative"
        return "neutral" if value == 4 else "positive"

    def score(self, values: Sequence[int], scale: int) -> Score:
        return self.score_counts(Counter(values), scale)

    def score_counts(self, answers: Mapping[int, int], scale: int) -> Score:
        counts = self.count_groups_of(answers, scale)
        n = sum(answers.values())
        mean, margin = mean_and_margin_of(answers)
        return Score(
            value=mean,
            n=n,
            margin=margin,
            unit="/7",
            formula=self.formula,
            groups=counts,
            extra={
                "percent_positive": percent(counts["positive"], n),
                "percent_positive_margin": proportion_margin(counts["positive"], n),
            },
        )
