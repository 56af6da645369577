"""Net Promoter Score: 0–10, score = %promoters − %detractors."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from collections.abc import Sequence

from hub.contracts import Metric
from hub.contracts import ScalePoint
from hub.contracts import Score
from hub.i18n import N_
from surveyhub_metrics.stats import net_margin
from surveyhub_metrics.stats import percent


class NPS(Metric):
    key = "nps"
    title = "NPS"
    scales = (11,)
    default_scale = 11
    default_question = N_("How likely are you to recommend {company} to a friend or colleague?")
    attribute_name = "surveyhubNpsScoreNum"
    default_cooldown_days = 30
    groups = ("detractor", "passive", "promoter")
    formula = "% promoters (9–10) − % detractors (0–6), from −100 to +100"

    def points(self, scale: int) -> list[ScalePoint]:
        labels = {0: N_("Not at all likely"), 10: N_("Extremely likely")}
        return [ScalePoint(v, labels.get(v, str(v))) for v in range(11)]

    def group(self, value: int, scale: int) -> str:
        if value >= 9:
            return "promoter"
        return "passive" if value >= 7 else "detractor"

    def score(self, values: Sequence[int], scale: int) -> Score:
        return self.score_counts(Counter(values), scale)

    def score_counts(self, answers: Mapping[int, int], scale: int) -> Score:
        counts = self.count_groups_of(answers, scale)
        n = sum(answers.values())
        promoters, detractors = counts["promoter"], counts["detractor"]
        value = None if not n else percent(promoters, n) - percent(detractors, n)
        return Score(
            value=value,
            n=n,
            margin=net_margin(promoters, detractors, n),
            unit="points",
            formula=self.formula,
            groups=counts,
        )
