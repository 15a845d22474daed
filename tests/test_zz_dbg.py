import httpx
from pathlib import Path
from tests.test_ws import serve, TOKEN

async def test_dbg(tmp_path: Path) -> None:
    async with serve(tmp_path) as server:
        async with httpx.AsyncClient() as c:
            for h in [{}, {"X-API-TOKEN": TOKEN}]:
                r = await c.get(server.http_url + "/", headers=h)
                print(r.status_code, r.headers, r.text)
