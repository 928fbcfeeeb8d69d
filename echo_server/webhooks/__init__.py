"""Webhooks in Pusher's format: the Laravel app hears when channels fill and empty, when
users come and go in presence channels, and what clients whisper.

``settings``: what the config file asks for (per app, per endpoint). ``events``: the core's
lifecycle events turned into Pusher's webhook events, filtered per endpoint. ``queue``: per
endpoint, events waiting and the one batch in flight, in memory or in Redis (then any
instance delivers what another queued). ``sender``: one delivery loop per endpoint, signed,
retried with backoff, in order, never on the fan-out's path.
"""
