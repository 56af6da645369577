"""SurveyHub's built-in metrics (NPS, CSAT, CES), shipped as an ordinary plugin."""

from hub import hookimpl
from hub.contracts import Metric

NPS = Metric(
    key="nps",
    title="NPS",
    scales=(11,),
    default_scale=11,
    default_question="How likely are you to recommend {company} to a friend or colleague?",
)
CSAT = Metric(
    key="csat",
    title="CSAT",
    scales=(2, 3, 5),
    default_scale=3,
    default_question="How satisfied were you with the support you received?",
)
CES = Metric(
    key="ces",
    title="CES",
    scales=(7,),
    default_scale=7,
    default_question="{company} made it easy for me to handle my issue.",
)


@hookimpl
def register_metrics():
    return [NPS, CSAT, CES]
