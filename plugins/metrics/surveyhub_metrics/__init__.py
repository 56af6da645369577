"""SurveyHub's built-in metrics (NPS, CSAT, CES), shipped as an ordinary plugin."""

from hub import hookimpl
from surveyhub_metrics.ces import CES
from surveyhub_metrics.csat import CSAT
from surveyhub_metrics.nps import NPS


@hookimpl
def register_metrics():
    return [NPS(), CSAT(), CES()]
