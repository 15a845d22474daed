"""wasup's exception tree: small and flat, each error knowing its API status and code.

The API maps these to responses in one place (``api.errors``); nothing else decides a status.
"""

from __future__ import annotations


class WasupError(Exception):
    """Base of every error wasup raises on purpose."""

    code = "INTERNAL_ERROR"
    status = 500


class InvalidRequest(WasupError):
    """The request is malformed; ``field`` names the part that is wrong, when there is one."""

    code = "INVALID_REQUEST"
    status = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DeviceNotFound(WasupError):
    code = "DEVICE_NOT_FOUND"
    status = 404

    def __init__(self, ref: object = None) -> None:
        super().__init__("device not found" if ref is None else f"device {ref} not found")


class DeviceConflict(WasupError):
    """The device exists already, or is in a state where the operation makes no sense."""

    code = "DEVICE_CONFLICT"
    status = 409


class MailboxFull(WasupError):
    """The device's mailbox is full: backpressure, try again after ``retry_after`` seconds."""

    code = "SERVICE_UNAVAILABLE"
    status = 503

    def __init__(self, message: str = "device is busy, try again shortly", retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class ActorTimeout(WasupError):
    """The device's actor did not answer within the deadline."""

    code = "GATEWAY_TIMEOUT"
    status = 504


class EngineError(WasupError):
    """An engine operation failed in a way the state machine understands (not a crash).

    ``reason`` is machine-readable (it becomes ``statusReason``); ``recoverable`` says whether
    wasup may retry on its own.
    """

    code = "ENGINE_ERROR"
    status = 502

    def __init__(self, reason: str, recoverable: bool = True, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.recoverable = recoverable
