"""wasup's domain errors: small and flat, each docstring naming who raises it.

They say what went wrong in wasup's own terms and nothing about HTTP: ``api.errors`` holds the
one table from these types to statuses and codes.
"""

from __future__ import annotations


class WasupError(Exception):
    """Base of every error wasup raises on purpose."""


class InvalidRequest(WasupError):
    """Raised by request validation when a request is malformed; ``field`` names the part."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class TooLarge(InvalidRequest):
    """Raised by request validation and the media URL fetch when a file is larger than wasup
    takes for its kind; ``field`` names where it came from (``media``, ``file``)."""


class DeviceNotFound(WasupError):
    """Raised by the device directory when a reference names no device."""

    def __init__(self, ref: object = None) -> None:
        super().__init__("device not found" if ref is None else f"device {ref} not found")


class NotFound(WasupError):
    """Raised by the webhook routes when a device's delivery or webhook configuration does not
    exist (a missing device is :class:`DeviceNotFound`), and by an engine session when a person
    asked about has no WhatsApp account or mapping."""


class MediaExpired(WasupError):
    """Raised by the devices facade when a message's media file is neither kept by wasup nor
    held by WhatsApp any more (downloads of it cannot succeed)."""


class DeviceConflict(WasupError):
    """Raised by the devices facade and the actor when the device exists already, or is in a
    state where the operation makes no sense."""


class WhatsAppRefused(WasupError):
    """Raised by an engine session when WhatsApp refused a request on its own terms (a group
    that is full, a participant who cannot be added, an invite link that expired); ``reason``
    is WhatsApp's, machine-readable, and the message says it in words."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason


class WhatsAppForbidden(WhatsAppRefused):
    """Raised by an engine session when WhatsApp refused a request because the account may not
    make it (not an admin of the group, not a participant, blocked)."""


class Busy(WasupError):
    """Raised by the devices facade when the device's command inbox is full: try again after
    ``retry_after`` seconds."""

    def __init__(self, message: str = "device is busy, try again shortly", retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class QueueFull(WasupError):
    """Raised by the device's outbound queue (:mod:`supervisor.outbound`) when it holds
    ``outbound_queue_size`` sends already: try again after ``retry_after`` seconds."""

    def __init__(self, message: str = "the device's outbound queue is full", retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(WasupError):
    """Raised by contact checks (:mod:`supervisor.contacts`) when a device asked WhatsApp about
    as many numbers as it may this hour: room frees up after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Restarting(WasupError):
    """Raised by the devices facade when the device's actor crashed while handling the command
    and is being restarted: try again after ``retry_after`` seconds."""

    def __init__(
        self, message: str = "device restarted after an internal error", retry_after: float = 1.0
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SimulatorUnreachable(WasupError):
    """Raised by the shared simulator's controls when its process cannot be reached (it is
    down or restarting): try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unresponsive(WasupError):
    """Raised by the devices facade when the device's actor did not answer within the call
    timeout."""


class EngineRefused(WasupError):
    """Raised by the devices facade when the engine refused a request for a reason wasup has no
    better name for; ``reason`` is machine-readable."""

    def __init__(self, reason: str, recoverable: bool = True, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.recoverable = recoverable


class EngineError(WasupError):
    """Raised by an engine session when an operation failed in a way the state machine
    understands (not a crash).

    ``reason`` is machine-readable (it becomes ``statusReason``); ``recoverable`` says whether
    wasup may retry on its own.
    """

    def __init__(self, reason: str, recoverable: bool = True, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.recoverable = recoverable


class DeliveryFailed(EngineError):
    """Raised by a device's sink (:meth:`supervisor.engine.Sink.deliver`) when the device could
    not commit the event (its actor stopped, or storing failed): the engine must not
    acknowledge it."""

    def __init__(self, reason: str = "delivery_failed", message: str | None = None) -> None:
        super().__init__(reason, recoverable=True, message=message)
