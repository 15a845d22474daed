"""The AI provider client: one OpenAI-compatible chat-completions request.

Synopsis::

    async with httpx.AsyncClient() as client:
        text = await chat_completion(client, settings, messages)   # or ProviderError

Error handling: every failure is a :class:`ProviderError` (a :class:`ProviderTimeout` for the
deadline) whose message is safe to log: it never holds the API key or the URL.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

from supervisor.autoreply.settings import AiSettings

#: A longer provider answer is cut here (characters).
MAX_REPLY_CHARS = 4096
#: A provider response body larger than this is an error (bytes).
MAX_RESPONSE_BYTES = 1 << 20


class ProviderError(Exception):
    """The provider did not produce a usable reply. The message is safe to log."""

    def __init__(self, reason: str, status_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


class ProviderTimeout(ProviderError):
    """The provider did not answer within the settings' ``timeoutSeconds``."""


def completions_url(base_url: str) -> str:
    """``{base_url}/chat/completions`` (unless ``base_url`` names that endpoint already)."""
    base = base_url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    return base + "/chat/completions"


async def chat_completion(
    client: httpx.AsyncClient, settings: AiSettings, messages: list[dict[str, str]]
) -> str:
    """POST the conversation to ``{baseUrl}/chat/completions`` and return the reply text.

    The whole exchange, body included, runs under one deadline of ``timeout_seconds``.
    Redirects are not followed.

    Error handling: raises :class:`ProviderTimeout` on the deadline or an httpx timeout, and
    :class:`ProviderError` for a refused connection, a non-2xx status, a body over 1 MiB, bad
    JSON or a response without text content. No message contains the API key or the URL.
    """
    body: dict[str, Any] = {"model": settings.model, "messages": messages}
    if settings.max_tokens is not None:
        body["max_tokens"] = settings.max_tokens
    if settings.temperature is not None:
        body["temperature"] = settings.temperature
    headers = {"Accept": "application/json"}
    if settings.api_key:
        headers["Authorization"] = f"Bearer {settings.api_key}"
    with trio.move_on_after(settings.timeout_seconds) as scope:
        try:
            async with client.stream(
                "POST",
                completions_url(settings.base_url),
                json=body,
                headers=headers,
                timeout=settings.timeout_seconds,
                follow_redirects=False,
            ) as response:
                status = response.status_code
                chunks = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise ProviderError("response too large", status)
                    chunks.append(chunk)
        except httpx.TimeoutException:
            raise ProviderTimeout("timed out") from None
        except httpx.HTTPError as exc:
            # httpx messages may carry the url; the exception type is enough to act on
            raise ProviderError(f"request failed ({type(exc).__name__})") from None
    if scope.cancelled_caught:
        raise ProviderTimeout("timed out")
    if not 200 <= status < 300:
        raise ProviderError(f"status {status}", status)
    try:
        data = json.loads(b"".join(chunks))
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ProviderError("malformed response", status) from None
    if not isinstance(content, str) or not content.strip():
        raise ProviderError("empty reply", status)
    return content.strip()[:MAX_REPLY_CHARS]
