"""Log hygiene and format: credentials never reach a log line; text or JSON lines.

:func:`redact` replaces query-string tokens and device keys in a text; :class:`RedactFilter`
applies it to every record of a logger (``api.server`` installs it on Hypercorn's access log)
and drops the contentless line Hypercorn writes when a stream closes before its response.

Usage::

    logging.getLogger("wasup.access").addFilter(REDACT)
    log.info("websocket refused for %s", redact(url))
"""

from __future__ import annotations

import json
import logging
import re
import time

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


#: Where the JSON formatter finds a device in a message that has no ``device`` extra: wasup's
#: log lines about one device start with ``device <sessionId>``.
_DEVICE_PREFIX = re.compile(r"^device (\S+?):?(?:\s|$)")


class JsonFormatter(logging.Formatter):
    """``--log-format json``: one JSON object per line, for log shippers.

    Keys: ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``, ``message``,
    ``device`` (the record's ``device`` extra, else the session id a ``device <id>`` message
    starts with, else null), ``event`` and ``reason`` (the record's extras, else null), and
    ``exception`` (the formatted traceback) when there is one. Usage::

        handler.setFormatter(JsonFormatter())
        log.info("device %s: %s -> %s", sid, a, b,
                 extra={"device": sid, "event": "device_status", "reason": reason})
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        device = record.__dict__.get("device")
        if device is None:
            m = _DEVICE_PREFIX.match(message)
            device = m.group(1) if m else None
        entry: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
            "device": device,
            "event": record.__dict__.get("event"),
            "reason": record.__dict__.get("reason"),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


#: The formats ``--log-format`` takes: the text line (time, level, logger, message) or JSON.
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str, log_format: str = "text") -> None:
    """Set up the root logger for ``wasup serve``: ``level`` (``info``...) and ``log_format``
    (one of :data:`LOG_FORMATS`)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
