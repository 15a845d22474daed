"""The WebSocket event stream at ``/`` (same port as the HTTP API).

Usage (the seed's form, a header, or a subprotocol for browsers)::

    ws://HOST:PORT/?token=TOKEN
    ws://HOST:PORT/                  with  X-API-TOKEN: TOKEN
    ws://HOST:PORT/                  with  Sec-WebSocket-Protocol: TOKEN   (or "wasup, TOKEN")

Optional query filters: ``sessionId`` (a session id or numeric device id; repeat the
parameter or give a comma list; resolved to devices when the connection opens) and
``events`` (a comma list of event types). Every message is one event,
``{"type", "sessionId", "data", "timestamp"}`` exactly as
:meth:`supervisor.events.Event.to_json` builds it. The operator token sees every device; a
device API key sees its own device only. The server never reads what the client sends: it
is discarded.

Close codes:

- handshake refused with HTTP 401 (no or bad credential), 400 (bad filter) or 429 (the
  credential's rate limit: a handshake costs one request; or more than
  ``WsSettings.max_per_credential`` connections, 64 by default, open at once), as the JSON
  error envelope the HTTP API uses;
- 1013 "subscriber too slow": the connection fell more than its queue
  (``WsSettings.queue_size``, else ``Config.event_queue_size``: 256 events) behind and the
  event bus dropped it; reconnect (and catch up over HTTP);
- 1008 "credential no longer valid": the device of the API key was deleted;
- 1001 "server shutting down": a graceful shutdown began (:func:`close_streams`), or the
  event bus closed the subscription; handshakes during a shutdown are answered 503.

Resource handling: each connection holds one bounded subscription on the event bus, which
never blocks a publisher and filters by device and type before queueing; it is dropped when
full. Nothing else is buffered: a send goes straight to the socket, and a send that makes no
progress for ``WsSettings.send_timeout`` seconds (30 by default: a peer that stopped reading,
so TCP backpressure holds the write) aborts the TCP connection, because Hypercorn's socket
write cannot be cancelled and the close frame would queue behind it. Keep-alive pings are sent
by Hypercorn (every ``WsSettings.ping_interval`` seconds, 25 by default, see
:func:`api.server.hypercorn_config`); a peer that answers nothing for ``read_timeout`` (two
intervals and ten seconds) is closed there.

Subprotocols: a client that offers ``wasup`` gets ``wasup`` back, however it authenticated
(browsers fail a handshake that offered protocols and got none); a token offered as a
subprotocol is echoed only when ``wasup`` was not offered next to it.

Credentials never reach a log line: the token is neither logged nor echoed in errors.

Modules: :mod:`~api.ws.handshake` (credentials and filters), :mod:`~api.ws.stream` (the pump
and its watchdogs), :mod:`~api.ws.transport` (the reach into Quart and Hypercorn),
:mod:`~api.ws.endpoint` (the route and the open streams).
"""
