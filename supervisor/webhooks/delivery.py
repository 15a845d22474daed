"""One webhook delivery attempt: a signed POST to the endpoint, and what came of it.

Synopsis::

    result = await attempt(client, url, "msg_1", body, secrets, attempt_timeout=15.0)
    result.ok, result.status_code, result.error, result.retry_after

    test = await send_test_event(config, settings, session_id)   # the settings' test route

Error handling: a failed delivery (timeout, refused address, connection error, non-2xx,
redirect) is never raised: it comes back as an :class:`AttemptResult` with its error. The
``webhook-timestamp`` is each attempt's own time (from Trio's clock, through
:mod:`common.clock`).
"""

from __future__ import annotations

import email.utils
import logging
import math

import attrs
import httpx
import trio

import storage.outbox as outbox
from common import clock
from common.ids import new_message_id
from supervisor.config import Config
from supervisor.webhooks import signing, ssrf
from supervisor.webhooks.settings import WebhookSettings

log = logging.getLogger("wasup.webhooks")

#: Longest Retry-After honoured (seconds); longer values are cut to this.
MAX_RETRY_AFTER = 36000.0
DEFAULT_TIMEOUT = 15.0
#: At most this much of a response body is read (and then discarded).
_MAX_BODY = 64 * 1024
USER_AGENT = "wasup-webhooks/1"


@attrs.frozen
class AttemptResult:
    """What one HTTP attempt came to: a status code or an error, and how long it took."""

    status_code: int | None
    error: str | None
    duration_ms: float
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@attrs.frozen
class TestDelivery:
    """What :func:`send_test_event` sent (its ``webhook-id``) and what came of it."""

    __test__ = False  # not a pytest test class, whatever its name

    webhook_id: str
    result: AttemptResult


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - now
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _describe(exc: BaseException) -> str:
    """A short, readable reason for a failed attempt (httpx often wraps the real one)."""
    text = str(exc)
    inner: BaseException | None = exc
    while not text and inner is not None:
        inner = inner.__cause__ or inner.__context__
        text = str(inner) if inner is not None else ""
    text = text or type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and not isinstance(exc.__cause__, ssrf.RefusedConnect):
        text = f"connection failed: {text}"
    elif isinstance(exc, httpx.TimeoutException):
        text = f"timed out: {text}"
    return text[:500]


async def attempt(
    client: httpx.AsyncClient,
    url: str,
    msg_id: str,
    body: bytes,
    secrets: tuple[str, ...] | list[str],
    *,
    attempt_timeout: float = DEFAULT_TIMEOUT,
) -> AttemptResult:
    """POST one signed delivery and report what happened. Never raises for a failed delivery
    (timeouts, refused addresses, connection errors, non-2xx all come back as a result).

    The ``webhook-timestamp`` is this attempt's time; the ``webhook-id`` is the caller's.
    """
    now = clock.now_epoch()
    start = trio.current_time()
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    try:
        headers = signing.sign_headers(msg_id, int(now), body, secrets)
    except ValueError as exc:
        return AttemptResult(None, str(exc), 0.0)
    headers["content-type"] = "application/json"
    headers["user-agent"] = USER_AGENT
    try:
        with trio.fail_after(attempt_timeout):
            async with client.stream("POST", url, content=body, headers=headers) as response:
                status = response.status_code
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= _MAX_BODY:
                        break
                retry_after = parse_retry_after(response.headers.get("retry-after"), now)
                if 300 <= status < 400:
                    error = "redirect not followed"
                    location = response.headers.get("location")
                    if location:
                        error += f" (location: {location[:200]})"
                elif not 200 <= status < 300:
                    error = f"http status {status}"
    except trio.TooSlowError:
        error = f"timed out after {attempt_timeout:g} s"
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        error = _describe(exc)
    except Exception as exc:
        # Still an attempt that failed: it must be recorded (and retried on the schedule),
        # never leave its row due at once for the next scan.
        log.exception("webhook %s: unexpected error while sending", msg_id)
        error = f"internal error: {type(exc).__name__}"
    duration = (trio.current_time() - start) * 1000.0
    return AttemptResult(status, error, duration, retry_after)


async def send_test_event(
    config: Config,
    settings: WebhookSettings,
    session_id: str,
    *,
    client: httpx.AsyncClient | None = None,
    attempt_timeout: float | None = None,
) -> TestDelivery:
    """Send one signed ``webhook_test`` event to the device's endpoint now (no outbox row, no
    retry) and report the outcome. The SSRF guard applies as for any delivery.

    Error handling: never raises for a failed delivery (see :func:`attempt`).
    Resource handling: without ``client``, a one-connection guarded client lives for this call.
    """
    now = clock.now_epoch()
    msg_id = new_message_id()
    body = outbox.body_of(
        {
            "type": "webhook_test",
            "timestamp": clock.iso(now),
            "sessionId": session_id,
            "data": {"message": "wasup webhook test"},
        }
    ).encode("utf-8")
    timeout = config.webhooks.timeout if attempt_timeout is None else attempt_timeout
    secrets = settings.active_secrets(now)
    if client is None:
        async with ssrf.open_client(config.allow_networks, timeout=timeout, max_connections=1) as own:
            result = await attempt(own, settings.url, msg_id, body, secrets, attempt_timeout=timeout)
    else:
        result = await attempt(client, settings.url, msg_id, body, secrets, attempt_timeout=timeout)
    return TestDelivery(msg_id, result)
