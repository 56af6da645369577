"""The Slack incoming-webhook body of an event: `{"text": ..., "blocks": [...]}`.

A detractor alert reads, for example, "NPS 3/10 (detractor) from Jane Doe" with the
comment quoted below it and the agent and a link to the ticket underneath.
"""

from __future__ import annotations

from typing import Any

from flask import current_app

from hub.webhooks.events import COMMENT_CREATED
from hub.webhooks.events import DELIVERY_SENT
from hub.webhooks.events import RATING_CREATED
from hub.webhooks.events import RATING_UPDATED
from hub.webhooks.events import TEST_EVENT
from hub.webhooks.events import WRITEBACK_FAILED

#: Slack cuts a section's text at 3,000 characters; the comment gets most of it.
COMMENT_LIMIT = 2500
_HEADINGS = {
    RATING_CREATED: "New rating",
    RATING_UPDATED: "Changed rating",
    COMMENT_CREATED: "New comment",
    WRITEBACK_FAILED: "Write-back failed",
}


def escape(text: str) -> str:
    """Text as Slack shows it literally: no links, mentions or @channel from a comment."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str | None, label: str) -> str:
    if not url or not url.startswith(("http://", "https://")):
        return escape(label)
    # A URL with | or > would end Slack's link early.
    safe = url.replace("|", "%7C").replace(">", "%3E").replace("<", "%3C")
    return f"<{safe}|{escape(label)}>"


def _score(data: dict[str, Any]) -> str:
    rating, survey = data["rating"], data["survey"]
    metric = current_app.extensions["hub"].registry.metrics.get(survey["metric"])
    title = metric.title if metric else survey["metric"].upper()
    try:
        out_of = f"/{metric.highest(rating['scale'])}" if metric else ""
    except Exception:  # a plugin's bug costs the "/10", not the alert
        out_of = ""
    group = f" ({rating['group']})" if rating.get("group") else ""
    return f"{title} {rating['value']}{out_of}{group}"


def slack_body(body: dict[str, Any]) -> dict[str, Any]:
    """The Slack message for an event body built by `payloads.event_body`."""
    kind, data = body["type"], body["data"]
    if kind == TEST_EVENT:
        text = "SurveyHub test event: this channel will receive the events you chose."
        return {"text": text, "blocks": [_section(text)]}
    who = data["customer"].get("name") or data["customer"].get("email") or "a customer"
    ticket = _link(data["ticket"].get("url"), f"Ticket {data['ticket']['id']}")
    agent = data.get("agent") or {}
    agent_name = escape(agent.get("name") or agent.get("id") or "no agent")
    if kind == DELIVERY_SENT:
        headline = f"Survey sent to {escape(who)} ({escape(data['survey']['name'])})"
    else:
        headline = f"*{_HEADINGS.get(kind, kind)}:* {escape(_score(data))} from {escape(who)}"
    blocks = [_section(headline)]
    comment = (data.get("rating") or {}).get("comment") or ""
    if comment:
        shown = comment if len(comment) <= COMMENT_LIMIT else comment[:COMMENT_LIMIT] + "…"
        blocks.append(_section("\n".join("> " + escape(line) for line in shown.splitlines())))
    if kind == WRITEBACK_FAILED:
        error = escape((data.get("write_back") or {}).get("error") or "")
        blocks.append(_section(f"The helpdesk refused it: {error[:1000]}"))
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"Agent: {agent_name}"},
                {"type": "mrkdwn", "text": ticket},
            ],
        }
    )
    fallback = f"{headline} · Agent: {agent_name} · {ticket}"
    if comment:
        fallback += f" · “{escape(comment[:300])}”"
    return {"text": fallback, "blocks": blocks}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}
