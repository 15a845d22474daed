"""Webhooks: signed, persisted, retried delivery of device events to an HTTP endpoint.

- :mod:`.signing`: Standard Webhooks 1.0 headers (``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature``) and ``whsec_`` secrets.
- :mod:`.ssrf`: which addresses a webhook may reach, and an httpx transport that connects only
  to the address it checked.
- :mod:`.settings`: validation and normalisation of a device's webhook settings.
- :mod:`.dispatcher`: the :class:`~.dispatcher.WebhookDispatcher` actor that drains the outbox.

The outbox itself (one row per event to deliver, written in the same transaction as the change
that caused it) lives in :mod:`storage.outbox`.
"""
