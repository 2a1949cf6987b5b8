"""The script runner: concurrent calls share round trips yet each gets its own reply."""

from __future__ import annotations

import asyncio
import hashlib
import secrets

import pytest
import redis
from redis.exceptions import ResponseError

from routing.scripts import ScriptRunner

ECHO = "return {KEYS[1], ARGV[1]}"
FAIL = "return redis.error_reply('no good')"


def test_concurrent_calls_each_get_their_own_reply(redis_url: str) -> None:
    async def main() -> list[list[bytes]]:
        runner = ScriptRunner(redis_url, {"echo": ECHO})
        try:
            calls = asyncio.gather(*(runner.run("echo", [f"k{i}"], [i]) for i in range(1000)))
            return await asyncio.wait_for(calls, 10)
        finally:
            await runner.aclose()

    replies = asyncio.run(main())

    assert replies == [[f"k{i}".encode(), str(i).encode()] for i in range(1000)]


def test_a_script_redis_does_not_know_is_loaded_and_the_call_retried(redis_url: str) -> None:
    # After a restart Redis knows none of the scripts the runner loaded: here the runner's
    # script is swapped, once loaded, for a source no server has seen (SCRIPT FLUSH would do
    # the same, but for every user of this Redis), so its next EVALSHA answers NOSCRIPT.
    unseen = f"-- {secrets.token_hex(8)}\n{ECHO}"

    async def main() -> list[object]:
        runner = ScriptRunner(redis_url, {"echo": ECHO})
        try:
            await runner.run("echo", ["a"], [0])
            runner._sources["echo"] = unseen
            runner._shas["echo"] = hashlib.sha1(unseen.encode()).hexdigest()
            calls = asyncio.gather(*(runner.run("echo", ["a"], [i]) for i in range(3)))
            return await asyncio.wait_for(calls, 10)
        finally:
            await runner.aclose()

    assert asyncio.run(main()) == [[b"a", b"0"], [b"a", b"1"], [b"a", b"2"]]


def test_one_failing_call_does_not_fail_its_batch(redis_url: str) -> None:
    async def main() -> list[object]:
        runner = ScriptRunner(redis_url, {"echo": ECHO, "fail": FAIL})
        try:
            return await asyncio.gather(runner.run("echo", ["a"], [1]),
                                        runner.run("fail", ["b"], [2]),
                                        runner.run("echo", ["c"], [3]),
                                        return_exceptions=True)
        finally:
            await runner.aclose()

    ok1, bad, ok2 = asyncio.run(main())

    assert ok1 == [b"a", b"1"] and ok2 == [b"c", b"3"]
    assert isinstance(bad, ResponseError) and "no good" in str(bad)


def test_an_unreachable_redis_fails_every_waiting_call() -> None:
    async def main() -> None:
        runner = ScriptRunner("redis://127.0.0.1:1/0", {"echo": ECHO})
        try:
            await asyncio.gather(*(runner.run("echo", ["a"], [i]) for i in range(3)))
        finally:
            await runner.aclose()

    with pytest.raises(redis.ConnectionError):
        asyncio.run(main())


def test_a_raising_call_fails_alone_and_a_call_returning_nothing_answers_none(
        redis_url: str) -> None:
    async def main() -> list[object]:
        runner = ScriptRunner(redis_url, {"echo": ECHO, "raise": "error('boom')",
                                          "nothing": "return nil"})
        try:
            return await asyncio.gather(runner.run("raise", [], []),
                                        runner.run("nothing", [], []),
                                        runner.run("echo", ["a"], [1]),
                                        return_exceptions=True)
        finally:
            await runner.aclose()

    raised, nothing, echoed = asyncio.run(main())

    assert isinstance(raised, ResponseError) and "boom" in str(raised)
    assert nothing is None  # and the calls after it still get their replies
    assert echoed == [b"a", b"1"]


def test_calls_of_one_batch_run_in_the_order_they_were_queued(redis_url: str) -> None:
    key = f"test:order:{secrets.token_hex(4)}"

    async def main() -> list[object]:
        runner = ScriptRunner(redis_url, {"incr": "return redis.call('INCR', KEYS[1])",
                                          "get": "return redis.call('GET', KEYS[1])"})
        try:
            calls = [runner.run("incr" if i % 2 == 0 else "get", [key], []) for i in range(200)]
            return await asyncio.gather(*calls)
        finally:
            await runner.aclose()

    replies = asyncio.run(main())
    redis.Redis.from_url(redis_url).delete(key)

    assert replies[0::2] == list(range(1, 101))  # each INCR sees every one before it
    assert replies[1::2] == [str(n).encode() for n in range(1, 101)]  # each GET the INCR before


COMMANDS = [
    ("EVALSHA", "0123abcd" * 5, 2, "by:route:a:window", "by:route:a:tokens", "", 1764037000123,
     "9f86d081884c7d65", 0, "latency", 600, 0.25, 1.0, 1e-07, -3, 2**62),
    ("EVALSHA", "0123abcd" * 5, 1, "by:route:é:window", "naïve ✓", b"\x00\xffraw"),
    ("SCRIPT LOAD", "return {KEYS[1], ARGV[1]}"),
]


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://127.0.0.1:6380/0",
                                 "unix:///tmp/redis.sock?db=0"])
def test_hiredis_packing_sends_the_bytes_redis_py_would(url: str) -> None:
    from redis.asyncio.connection import parse_url

    from routing.scripts import hiredis_packing

    plain = parse_url(url).get("connection_class", redis.asyncio.Connection)
    ours = hiredis_packing(url)

    assert issubclass(ours, plain)  # TLS stays TLS, a Unix socket stays a socket
    for command in COMMANDS:
        assert b"".join(ours().pack_command(*command)) == b"".join(plain().pack_command(*command))


def test_an_argument_redis_cannot_take_is_a_data_error() -> None:
    from redis.exceptions import DataError

    from routing.scripts import hiredis_packing

    with pytest.raises(DataError):
        hiredis_packing("redis://127.0.0.1:6379/0")().pack_command("EVALSHA", "x", 0, {"a": 1})


# A grouped script: counts its runs in KEYS[1], answers (run, shared tag, item) per call.
RUNS = """
local run = redis.call('INCR', KEYS[1])
local out = {}
for i = 2, #ARGV do out[#out + 1] = {run, ARGV[1], ARGV[i]} end
return out
"""


def test_grouped_calls_share_a_script_run_per_shared_arguments(redis_url: str) -> None:
    from routing.scripts import MAX_ITEMS

    key = f"test:runs:{secrets.token_hex(4)}"

    async def main() -> list[list[object]]:
        runner = ScriptRunner(redis_url, {"runs": RUNS})
        try:
            calls = [runner.submit_item("runs", (key,), ("x",), (i,))
                     for i in range(MAX_ITEMS + 44)]
            calls += [runner.submit_item("runs", (key,), ("y",), (i,)) for i in range(5)]
            return await asyncio.wait_for(asyncio.gather(*calls), 10)
        finally:
            await runner.aclose()

    replies = asyncio.run(main())
    redis.Redis.from_url(redis_url).delete(key)

    xs, ys = replies[:MAX_ITEMS + 44], replies[MAX_ITEMS + 44:]
    assert [int(item) for _, _, item in xs] == list(range(MAX_ITEMS + 44))  # each its own reply
    assert [int(item) for _, _, item in ys] == list(range(5))
    assert {tag for _, tag, _ in xs} == {b"x"} and {tag for _, tag, _ in ys} == {b"y"}
    # three runs: the x calls split at MAX_ITEMS, the y calls (other arguments) on their own
    assert len({run for run, _, _ in replies}) == 3
    assert len({run for run, _, _ in xs[:MAX_ITEMS]}) == 1
    assert len({run for run, _, _ in ys}) == 1


GET = "return redis.call('GET', KEYS[1])"
SET = "redis.call('SET', KEYS[1], ARGV[1]); return {1}"


def _get_queued_before_set(redis_url: str, get: str, set_: str) -> object:
    """What a GET queued before a SET of the same key (in one loop iteration) read, with the
    SET's script among the runner's ``first``."""
    key = f"test:first:{secrets.token_hex(4)}"

    async def main() -> list[object]:
        runner = ScriptRunner(redis_url, {"get": get, "set": set_}, first=("set",))
        try:
            got = runner.submit("get", [key], [])  # both queued in this loop iteration
            done = runner.submit_item("set", (key,), ("done",), (0,))
            return await asyncio.gather(got, done)
        finally:
            await runner.aclose()

    seen, _ = asyncio.run(main())
    redis.Redis.from_url(redis_url).delete(key)
    return seen


def test_the_first_scripts_run_before_the_rest_of_their_flush(redis_url: str) -> None:
    assert _get_queued_before_set(redis_url, GET, SET) == b"done"  # queued second, run first


def test_a_script_redis_has_not_seen_yet_keeps_its_place_in_the_flush(redis_url: str) -> None:
    # Redis knows the reader's script (another worker ran it) but not the writer's, as on a
    # fresh Redis the first time a report is sent: the writer still runs first.
    redis.Redis.from_url(redis_url).script_load(GET)
    unseen_set = f"-- {secrets.token_hex(8)}\n{SET}"

    assert _get_queued_before_set(redis_url, GET, unseen_set) == b"done"


def test_a_grouped_run_that_fails_fails_its_own_calls_only(redis_url: str) -> None:
    async def main() -> list[object]:
        runner = ScriptRunner(redis_url, {"fail": FAIL, "short": "return {1}", "echo": ECHO})
        try:
            return await asyncio.gather(
                runner.submit_item("fail", ("a",), (), (1,)),
                runner.submit_item("fail", ("a",), (), (2,)),
                runner.submit_item("short", ("b",), (), (1,)),
                runner.submit_item("short", ("b",), (), (2,)),
                runner.run("echo", ["c"], [3]), return_exceptions=True)
        finally:
            await runner.aclose()

    fail1, fail2, short1, short2, echoed = asyncio.run(main())

    assert isinstance(fail1, ResponseError) and isinstance(fail2, ResponseError)
    # a script answering fewer replies than calls is a bug it names, not a wrong answer
    assert isinstance(short1, RuntimeError) and "'short' answered 2 grouped calls" in str(short1)
    assert isinstance(short2, RuntimeError)
    assert echoed == [b"c", b"3"]
