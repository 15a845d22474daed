"""A device's background engine operations: the ones that may take long (a login handshake,
the start of a pairing) run as tasks in the operations nursery, each under its own cancel
scope, so that the actor goes on handling its inbox meanwhile.

Resource handling: :meth:`Operations.cancel` cancels every operation under way and makes the
outcome of any that still reports stale (its ``generation`` is behind). An operation that fails
reports :class:`~supervisor.inbox.OpFailed` through the device's inbox; one that succeeds
reports through the engine's own events.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio

from .context import ActorContext
from .inbox import Inbox, OpFailed

Operation = Callable[[], Awaitable[None]]


@attrs.define(eq=False, slots=True)
class Operations:
    """The engine operations under way for one device."""

    ctx: ActorContext
    inbox: Inbox
    generation: int = 0
    scopes: list[trio.CancelScope] = attrs.field(factory=list)

    def spawn(self, fn: Operation, *, login: bool = False) -> None:
        """Run ``fn`` in the background; ``login``: through the login limiter (at most
        ``max_concurrent_logins`` handshakes at once)."""
        scope = trio.CancelScope()
        self.scopes.append(scope)
        self.ctx.ops_nursery.start_soon(self._run, scope, self.generation, fn, login)

    def current(self, generation: int) -> bool:
        """Whether an outcome of ``generation`` is from an operation not cancelled since."""
        return generation == self.generation

    def cancel(self) -> None:
        """Cancel every operation under way; their outcomes are stale from now on."""
        self.generation += 1
        for scope in self.scopes:
            scope.cancel()
        self.scopes.clear()

    async def _run(self, scope: trio.CancelScope, generation: int, fn: Operation, login: bool) -> None:
        try:
            with scope:
                try:
                    if login:
                        async with self.ctx.login_limiter:
                            await fn()
                    else:
                        await fn()
                except Exception as exc:
                    self.inbox.put_event(OpFailed(generation, exc))
        finally:
            try:
                self.scopes.remove(scope)
            except ValueError:
                pass
