"""Read marks and applied actions below the API: the ``chat_reads`` repository and the unread
count it feeds, what reactions, edits and revokes do to their target rows, the read flow's
order (receipts first, the mark only once they left), and the whatsmeow engine's read
receipts at neonize's boundary (one call per sender, receipt type ``read``)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from neonize.client import NewClient
from neonize.utils.enum import ReceiptType

import storage
from storage import Repositories, open_database
from supervisor import reads
from supervisor.engines import whatsmeow_client as wc
from supervisor.errors import EngineError
from tests.store_support import Backend
from tests.test_history_storage import _plans, add, at
from tests.test_storage import new_device
from tests.test_whatsmeow_engine import Sink, connected_session, fake_go  # noqa: F401

A = "15550000001@s.whatsapp.net"
B = "15550000002@s.whatsapp.net"
G = "120363000000000001@g.us"


def action(r: Repositories, device: int, chat: str, n: int, type: str) -> None:
    r.messages.insert(device, message_id=f"m{device}-{n}", chat=chat, direction="in",
                      text=None, status="received", at=at(n), type=type)


async def test_the_read_mark_moves_only_forward_and_sets_the_unread_count(backend: Backend) -> None:
    async with backend.open() as db:

        def fill(r: Repositories) -> int:
            d = new_device(r).id
            add(r, d, A, "in", 1)
            add(r, d, A, "in", 2)
            action(r, d, A, 3, "reaction")
            action(r, d, A, 4, "edit")
            add(r, d, B, "in", 5)
            return d

        d = await db.run(fill)
        unread = await db.run(lambda r: r.reads.unread(d, A, limit=10))
        assert [m.message_id for m in unread] == [f"m{d}-1", f"m{d}-2"]  # no actions
        assert all(m.sender is None for m in unread)  # add() stores no sender
        chats = await db.run(lambda r: r.message_history.chats(d))
        assert {c.chat: c.unread for c in chats.items} == {A: 2, B: 1}

        # Only the newest `limit`, oldest first.
        newest = await db.run(lambda r: r.reads.unread(d, A, limit=1))
        assert [m.message_id for m in newest] == [f"m{d}-2"]

        await db.run(lambda r: r.reads.mark(d, A, unread[-1].row, at(10)))
        assert await db.run(lambda r: r.reads.mark_of(d, A)) == unread[-1].row
        assert await db.run(lambda r: r.reads.unread(d, A, limit=10)) == []
        chats = await db.run(lambda r: r.message_history.chats(d))
        assert {c.chat: c.unread for c in chats.items} == {A: 0, B: 1}

        # A mark below the stored one changes nothing.
        await db.run(lambda r: r.reads.mark(d, A, unread[0].row, at(11)))
        assert await db.run(lambda r: r.reads.mark_of(d, A)) == unread[-1].row

        await db.run(lambda r: add(r, d, A, "in", 12))
        chats = await db.run(lambda r: r.message_history.chats(d))
        assert {c.chat: c.unread for c in chats.items} == {A: 1, B: 1}
        # An answer still counts as reading what came before it.
        await db.run(lambda r: add(r, d, B, "out", 13))
        chats = await db.run(lambda r: r.message_history.chats(d))
        assert {c.chat: c.unread for c in chats.items} == {A: 1, B: 0}

        # Marks of an unknown device are refused; a deleted device's marks go with it.
        with pytest.raises(storage.NotFound):
            await db.run(lambda r: r.reads.mark(999, A, 1, at(14)))
        await db.run(lambda r: r.devices.delete(d))
        assert await db.run(lambda r: r.reads.mark_of(d, A)) == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.reads.unread(1, A, limit=10),
        lambda r: r.reads.mark_of(1, A),
        lambda r: r.message_history.chats(1),
    ],
)
async def test_read_queries_walk_an_index(tmp_path: Path, call: Any) -> None:
    path = tmp_path / "wasup.db"
    async with open_database(path) as db:

        def fill(r: Repositories) -> None:
            d = new_device(r).id
            for n in range(12):
                add(r, d, A if n % 2 else B, "in" if n % 3 else "out", n)
            r.reads.mark(d, A, 3, at(20))

        await db.run(fill)
    plans = _plans(path, call)
    assert plans
    for sql, plan in plans:
        for line in plan.splitlines():
            if line.startswith("SCAN") and "messages" in line and "COVERING" not in line:
                assert "messages_device" in line, (sql, plan)
        assert "TEMP B-TREE" not in plan or "ORDER BY id" in sql, (sql, plan)
    counts = [plan for sql, plan in plans if "COUNT(*)" in sql]
    for plan in counts:  # the unread count reads the index alone
        assert "COVERING INDEX messages_chat_unread" in plan, plan


async def test_actions_change_their_target_row(backend: Backend) -> None:
    async with backend.open() as db:

        def fill(r: Repositories) -> int:
            d = new_device(r).id
            r.messages.insert(d, message_id="3ATEXT", chat=A, direction="in", text="hi",
                              status="received", at=at(1), sender=A,
                              content={"type": "text", "text": "hi", "pushName": "Ann"})
            r.messages.insert(d, message_id="3ALOC", chat=A, direction="in", text="",
                              status="received", at=at(2), sender=A, type="location",
                              content={"type": "location", "location": {"latitude": 1.0}})
            return d

        d = await db.run(fill)

        async def content(message_id: str) -> tuple[str | None, str, dict[str, Any]]:
            row = await db.run(lambda r: r.messages.get(d, message_id))
            assert row is not None
            return row.text, row.type, json.loads(row.content or "{}")

        assert await db.run(lambda r: r.message_actions.react(d, "3ATEXT", sender=B, emoji="👍"))
        assert await db.run(lambda r: r.message_actions.react(d, "3ATEXT", sender=A, emoji="😮"))
        assert (await content("3ATEXT"))[2]["reactions"] == {B: "👍", A: "😮"}
        assert await db.run(lambda r: r.message_actions.react(d, "3ATEXT", sender=B, emoji=""))
        assert await db.run(lambda r: r.message_actions.edit(d, "3ATEXT", "hello", at=at(3)))
        assert await content("3ATEXT") == ("hello", "text", {
            "type": "text", "text": "hello", "pushName": "Ann", "reactions": {A: "😮"},
            "edited": True, "editedAt": at(3)})
        # A location has no text to edit; a missing target changes nothing.
        assert not await db.run(lambda r: r.message_actions.edit(d, "3ALOC", "x", at=at(4)))
        assert not await db.run(lambda r: r.message_actions.edit(d, "3ANONE", "x", at=at(4)))
        assert not await db.run(lambda r: r.message_actions.react(d, "3ANONE", sender=A, emoji="x"))
        # A revoke clears everything but the type; nothing applies after it.
        assert await db.run(lambda r: r.message_actions.revoke(d, "3ALOC", at=at(5)))
        assert await content("3ALOC") == (None, "location", {"revoked": True, "revokedAt": at(5)})
        assert not await db.run(lambda r: r.message_actions.revoke(d, "3ALOC", at=at(6)))
        assert not await db.run(lambda r: r.message_actions.react(d, "3ALOC", sender=A, emoji="x"))


class Receipts:
    """An engine session that records (or refuses) read receipts."""

    def __init__(self, error: EngineError | None = None) -> None:
        self.calls: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.error = error

    async def mark_read(self, chat: str, messages: Sequence[tuple[str, str | None]]) -> None:
        if self.error is not None:
            raise self.error
        self.calls.append((chat, list(messages)))


async def test_a_group_names_each_sender_and_a_refusal_marks_nothing(backend: Backend) -> None:
    async with backend.open() as db:

        def fill(r: Repositories) -> int:
            d = new_device(r).id
            for n, sender in enumerate([A, B, A]):
                r.messages.insert(d, message_id=f"g{n}", chat=G, direction="in", text="x",
                                  status="received", at=at(n), sender=sender)
            return d

        d = await db.run(fill)
        refusing = Receipts(EngineError("mark_read_failed: no", recoverable=False))
        with pytest.raises(EngineError):
            await reads.mark_chat_read(db, refusing, d, G)  # type: ignore[arg-type]
        assert await db.run(lambda r: r.reads.mark_of(d, G)) == 0  # nothing marked

        session = Receipts()
        assert await reads.mark_chat_read(db, session, d, G) == 3  # type: ignore[arg-type]
        assert session.calls == [(G, [("g0", A), ("g1", B), ("g2", A)])]
        assert await reads.mark_chat_read(db, session, d, G) == 0  # type: ignore[arg-type]
        assert len(session.calls) == 1


async def test_whatsmeow_sends_one_read_receipt_per_sender(
    tmp_path: Path, fake_go: Any  # noqa: F811
) -> None:
    sink = Sink()
    session, client = await connected_session(tmp_path, fake_go, sink)
    calls: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    class Api:
        def mark_read(self, *ids: str, **kwargs: Any) -> None:
            # neonize's own signature takes exactly these arguments
            inspect.signature(NewClient.mark_read).bind(None, *ids, **kwargs)
            calls.append((ids, kwargs))

    client._api = Api()  # type: ignore[assignment]
    await session.mark_read(G, [("g0", A), ("g1", B), ("g2", A)])
    assert [(ids, f"{kw['chat'].User}@{kw['chat'].Server}", kw["sender"].User,
             kw["receipt"]) for ids, kw in calls] == [
        (("g0", "g2"), G, "15550000001", ReceiptType.READ),
        (("g1",), G, "15550000002", ReceiptType.READ),
    ]
    calls.clear()
    await session.mark_read(A, [("m1", None), ("m2", None)])
    assert len(calls) == 1 and calls[0][0] == ("m1", "m2")
    assert calls[0][1]["sender"] == wc.NO_JID  # a one-to-one chat's receipt names no sender

    class Refusing:
        def mark_read(self, *ids: str, **kwargs: Any) -> None:
            raise RuntimeError("MarkReadError: server said no")

    client._api = Refusing()  # type: ignore[assignment]
    with pytest.raises(EngineError) as info:
        await session.mark_read(A, [("m1", None)])
    assert info.value.reason.startswith("mark_read_failed") and not info.value.recoverable
    await session.stop()
    with pytest.raises(EngineError) as info:
        await session.mark_read(A, [("m1", None)])
    assert info.value.reason == "not_connected" and info.value.recoverable
