"""neonize's own message objects, translated by the whatsmeow engine and handed to a real
device actor: each kind is stored once and published once; an undecryptable message that
arrives again decrypted is completed, and a redelivery changes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
from neonize.proto import Neonize_pb2 as nz
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage

from supervisor.engine import MessageReceived
from supervisor.engines.simulator import SimulatorEngine
from supervisor.engines.whatsmeow_translate import translate

from .test_receive_e2e import connected_device, until
from .test_whatsmeow_messages import KINDS, PEER

PEER_JID = "15557654321@s.whatsapp.net"


def neonize_message(message_id: str, message: WAMessage) -> MessageReceived:
    ev = nz.Message(Info=nz.MessageInfo(
        ID=message_id, Timestamp=1_750_000_100, Pushname="Ann",
        MessageSource=nz.MessageSource(Chat=PEER, Sender=PEER),
    ))
    ev.Message.CopyFrom(message)
    (received,) = translate(ev, now=0.0)
    assert isinstance(received, MessageReceived)
    return received


def undecryptable(message_id: str) -> MessageReceived:
    info = nz.MessageInfo(ID=message_id, Timestamp=1_750_000_100,
                          MessageSource=nz.MessageSource(Chat=PEER, Sender=PEER))
    (received,) = translate(nz.UndecryptableMessage(Info=info), now=0.0)
    assert isinstance(received, MessageReceived)
    return received


async def test_each_neonize_kind_is_published_once_through_the_actor(tmp_path: Path) -> None:
    async with connected_device(tmp_path) as (server, _api, device, events):
        engine = server.sup.engine
        assert isinstance(engine, SimulatorEngine)
        sink = engine.get_session(device["id"]).sink
        expected: list[tuple[str, str]] = []
        for n, (_, build, content) in enumerate(KINDS):
            message = WAMessage()
            build(message)
            await sink.deliver(neonize_message(f"3EB0N{n:03d}", message))
            expected.append((f"3EB0N{n:03d}", content.type))
        await sink.deliver(neonize_message("3EB0N000", WAMessage(conversation="again")))
        await until(events, len(KINDS))
        assert [(e["data"]["messageId"], e["data"]["type"]) for e in events] == expected
        assert all(e["type"] == "message_received" for e in events)
        assert all(e["data"]["pushName"] == "Ann" for e in events)
        rows = await server.sup.db.run(
            lambda r: [r.messages.get(device["id"], mid) for mid, _ in expected]
        )
        assert [row.type if row else None for row in rows] == [t for _, t in expected]


async def test_an_undecryptable_message_is_completed_when_it_arrives_decrypted(
    tmp_path: Path,
) -> None:
    async with connected_device(tmp_path) as (server, api, device, events):
        engine = server.sup.engine
        assert isinstance(engine, SimulatorEngine)
        sink = engine.get_session(device["id"]).sink
        sid = device["sessionId"]

        async def received() -> Any:
            stats = (await api.get(f"/devices/{sid}")).json()["data"]["statistics"]
            return stats["messagesReceived"]

        await sink.deliver(undecryptable("3EB0LATE"))
        await sink.deliver(undecryptable("3EB0LATE"))  # whatsmeow's retry failed again
        await until(events, 1)
        assert [e["type"] for e in events] == ["message_undecryptable"]
        assert events[0]["data"]["reason"] == "decrypt_failed"
        assert await received() == 0
        row = await server.sup.db.run(lambda r: r.messages.get(device["id"], "3EB0LATE"))
        assert row is not None and row.type == "undecryptable"

        await sink.deliver(neonize_message("3EB0LATE", WAMessage(conversation="now readable")))
        await sink.deliver(neonize_message("3EB0LATE", WAMessage(conversation="now readable")))
        await until(events, 2)
        assert [e["type"] for e in events] == ["message_undecryptable", "message_received"]
        assert events[1]["data"]["text"] == "now readable"
        assert await received() == 1
        row = await server.sup.db.run(lambda r: r.messages.get(device["id"], "3EB0LATE"))
        assert row is not None and (row.type, row.text) == ("text", "now readable")
        assert json.loads(row.content or "")["text"] == "now readable"
        with trio.move_on_after(0.1):
            await until(events, 3)
        assert len(events) == 2
