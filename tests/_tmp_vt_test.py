import time, trio, pytest
from storage import open_database, insert_device

async def test_many(autojump_clock, tmp_path):
    async with open_database(tmp_path / "x.db") as db:
        t0 = time.perf_counter(); v0 = trio.current_time()
        async def one(n):
            await db.run(lambda c: insert_device(c, user_id="u", alias=f"a{n}", session_id=f"s{n}", business_type=None, phone_number=None, description=None, api_key_hash=f"h{n}", status="pending", now="t"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep, 100)
            for n in range(1000):
                nursery.start_soon(one, n)
            await db.run(lambda c: None)
            print("virtual", trio.current_time() - v0)
        print("real", time.perf_counter() - t0, db.statistics())
