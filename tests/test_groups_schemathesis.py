"""Schemathesis on the group routes of one connected device (simulator): every generated body,
path and query reaches validation and the simulated WhatsApp; the spec and the API must agree
on every value, and nothing answers 5xx. A schema-valid group id names a group the device is
not in (409 ``group_not_found``) and a schema-valid file is no JPEG (400): both are accepted
answers for schema-valid requests here. Real time, a subprocess (see
tests/test_api_schemathesis.py).
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import TEST_TOKEN, api_client, running_server
from tests.test_api_schemathesis import SETTINGS, no_media_urls, run_schemathesis

__all__ = ["no_media_urls"]  # the autouse fixture: no generated media.url is fetched

GROUP_OPERATIONS = ["listGroups", "createGroup", "joinGroup", "getGroup", "updateGroup",
                    "setGroupPicture", "updateGroupParticipants", "getGroupInvite", "leaveGroup",
                    "simulatorCreateGroup", "simulatorUpdateGroup", "simulatorGroupParticipants"]


async def test_schemathesis_groups_on_a_connected_device(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", settings=SETTINGS) as server:
        async with api_client(server) as api:
            r = await api.post("/devices", json={"userId": "gina", "alias": "G"})
            device = r.json()["data"]
            r = await api.post(f"/simulator/devices/{device['id']}/scan", json={})
            assert r.status_code == 200, r.text
        config = f'[parameters]\n"path.deviceId" = "{device["sessionId"]}"\n'
        for operation in GROUP_OPERATIONS:
            config += (
                f'\n[[operations]]\ninclude-operation-id = "{operation}"\n'
                'checks.positive_data_acceptance.expected-statuses = '
                '["2xx", "400", "403", "409", "413"]\n'
            )
        code, output = await run_schemathesis(
            server, tmp_path, "groups", token=TEST_TOKEN, config=config,
            include=r"^/(simulator/)?devices/\{deviceId\}/groups",
            # The stateful phase's chains mix in negative steps and judge the whole chain by
            # its last, valid, request: it reports what it sent as invalid.
            phases="examples,coverage,fuzzing",
        )
    assert code == 0, output[-6000:]
