"""Log hygiene: credentials never reach a log line.

:func:`redact` replaces query-string tokens and device keys in a text; :class:`RedactFilter`
applies it to every record of a logger (``api.server`` installs it on Hypercorn's access log)
and drops the contentless line Hypercorn writes when a stream closes before its response.

Usage::

    logging.getLogger("wasup.access").addFilter(REDACT)
    log.info("websocket refused for %s", redact(url))
"""

from __future__ import annotations

import logging
import re

_SECRET_QUERY = re.compile(r"(?i)([?&](?:token|api_key|apikey|key)=)[^&\s\"']*")
_DEVICE_KEY = re.compile(r"dev_[A-Za-z0-9_\-]{8,}")
_NO_RESPONSE = re.compile(r'" - - \d+us$')


def redact(text: str) -> str:
    """``text`` with query-string tokens and device keys replaced by ``***``."""
    text = _SECRET_QUERY.sub(r"\1***", text)
    return _DEVICE_KEY.sub("dev_***", text)


class RedactFilter(logging.Filter):
    """Replace tokens and device keys in log records (defence in depth for the access log).

    Also drops the "- -" line Hypercorn logs for every request when the stream closes just
    before its own access line with the status (one request, one line).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _NO_RESPONSE.search(message):
            return False
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


#: The one filter instance (adding it twice to a logger is a no-op).
REDACT = RedactFilter()
