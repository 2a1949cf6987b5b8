"""The script runner: concurrent calls share round trips yet each gets its own reply."""

from __future__ import annotations

import asyncio
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
    # a source no server has seen: the first EVALSHA answers NOSCRIPT, as after a restart
    # (SCRIPT FLUSH would do the same, but for every user of this Redis)
    unseen = f"-- {secrets.token_hex(8)}\n{ECHO}"

    async def main() -> list[object]:
        runner = ScriptRunner(redis_url, {"echo": unseen})
        try:
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
