import logging, trio, pytest
from pathlib import Path
from trio_websocket import open_websocket_url
from tests.test_ws import serve, TOKEN, create_device

async def test_dbg(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve(tmp_path) as server, server.client() as client:
        device = await create_device(client, "Quiet")
        key = device["apiKey"]
        for url in [f"{server.ws_url}/?token={TOKEN}&events=qr_code", f"{server.ws_url}/?token={key}"]:
            async with open_websocket_url(url) as c:
                print("connected", c.subprotocol, len(caplog.records), logging.getLogger("wasup.api.ws").disabled, logging.getLogger("wasup.api.ws").getEffectiveLevel())
    for r in caplog.records:
        if r.name.startswith("wasup"): print(r.name, r.getMessage())
