"""Webhooks: signed, persisted, retried delivery of device events to an HTTP endpoint.

- :mod:`.signing`: Standard Webhooks 1.0 headers (``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature``) and ``whsec_`` secrets.
- :mod:`.ssrf`: which addresses a webhook may reach, and an httpx transport that connects only
  to the address it checked.
- :mod:`.settings`: a device's webhook settings as frozen records (``WebhookSettings``,
  ``Secret``), their stored form, and the validation of a PUT body.
- :mod:`.delivery`: one signed POST to an endpoint and what came of it (and the test event).
- :mod:`.dispatcher`: the :class:`~.dispatcher.WebhookDispatcher` actor that drains the outbox.

The outbox itself (one row per event to deliver, written in the same transaction as the change
that caused it) lives in :mod:`storage.outbox`.
"""
