"""Outgoing webhooks: subscriptions, the event outbox, signing, sending and the log.

One concern per module: `models` (the tables), `signing` (Standard Webhooks),
`events` (recording events with the change that caused them), `payloads` (the JSON an
event carries), `slack` (the Slack incoming-webhook body), `sender` (the RQ job that
sends, retries and disables), `alerts` (the email to admins), `subscriptions`
(creating and changing subscriptions, for the pages and the API).
"""
