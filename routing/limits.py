"""Provider limits and health shared by every worker and host: the Python side of the scripts.

**Limits are sliding windows**, not GCRA. The promise a provider makes (and a user reads in
``rpm: 500``) is "at most N requests in any window", and GCRA (a token bucket) lets up to
almost 2N through in a window after an idle spell. Each admitted call is a member of a sorted
set; an admission checks, in one script, the requests and tokens in the window and the calls
in flight, and adds itself only when all three have room.

A call counts in the window **from its admission until ``limit_window_s`` after its answer**,
not after its start: the upstream sees the request somewhere between the two, so measuring
from the end keeps the upstream's own count at or under the limit whatever the network delay
(at the price of a slightly lower rate: latency / window). ``rpm`` and ``tpm`` count over
``limit_window_s`` (60 by default; a shorter window makes tests fast). Tokens are reserved from
an estimate before the call and replaced by the reported usage after.

Calls in flight carry a lease (their timeout plus a margin): a worker that dies mid-call frees
its concurrency slot when the lease ends, never leaks it.

**Waiting.** When every deployment is at a limit, the request is given a start time: the
moment capacity frees or, with a backlog, the next free slot after the requests already
waiting (slots are spaced by the limit's own rate), so a backlog comes back at the rate the
provider accepts instead of all at once.

**When Redis does not answer**, nothing is sent: a limit that cannot be checked is not
bypassed. ``RoutingStateError`` (retryable) makes the request wait and try again.

**When Redis lost its data**, a rate-limited deployment's window is seeded first: its calls
answered within the last window, as the database has them (``history``), go back into the
window before anything is admitted, so a restart does not let a provider see its limit twice
in one window. Retried attempts that ended in a failover are not rows of their own and are
not seen; calls in flight at the loss count again once they settle.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from routing.health import DeploymentState, Verdict
from routing.lua import ADMIT, PEEK, SEED, SETTLE
from routing.scripts import ScriptRunner
from routing.strategies import Ordering
from schemas.catalog import Deployment, RoutingPolicy
from schemas.errors import RoutingStateError
from schemas.keys import route_key

__all__ = ["Admission", "CallHistory", "Limiter", "Refusal"]

LEASE_MARGIN_S = 5.0
"""A call's lease on its concurrency slot is its timeout plus this."""
DEFAULT_LATENCY_MS = 1000
"""The typical call duration assumed until a deployment's latency has been measured."""
HEALTH_TTL_MS = 24 * 3600 * 1000
"""A deployment's health hash lives this long after its last report."""
MAX_SHAPES = 4096
"""Candidate lists whose script arguments are remembered at most."""

_UNREACHABLE = (RedisError, OSError, asyncio.TimeoutError)

CallHistory = Callable[[str, float], list[tuple[float, int]]]
"""``history(deployment, since epoch s)``: its calls answered since then, newest first
(answer time in epoch s, tokens); a blocking database read, run in a thread."""


@dataclass(frozen=True)
class Admission:
    """A call admitted to a deployment; settle it exactly once when the call ends."""

    deployment: Deployment
    member: str
    tokens: int
    probe: bool


@dataclass(frozen=True)
class Refusal:
    """No deployment admitted the call: ``saturated`` (at a limit) or all unhealthy."""

    saturated: bool
    wait_s: float
    reasons: tuple[tuple[str, str, float], ...] = ()
    """(deployment, why: rpm, tpm, concurrency, open, probing or cooling, seconds) each."""

    def describe(self) -> str:
        """``a: rpm (frees in 3.2s), b: breaker open (12.0s)``."""
        words = {"open": "breaker open", "probing": "breaker probing", "cooling": "cooling down"}
        return ", ".join(f"{name}: {words.get(why, why + ' full')} ({secs:.1f}s)"
                         for name, why, secs in self.reasons)


def _keys(dep: Deployment) -> list[str]:
    return [route_key(dep.name, kind) for kind in ("window", "tokens", "health", "slots")]


class Limiter:
    """Admits calls against shared limits and health, settles them, reads the state.

    One per worker process. Its Redis client (``routing.scripts``, which batches concurrent
    calls into one round trip) is created on first use, on the event loop that uses it (the
    engine's), and closed by ``aclose``.
    """

    def __init__(self, redis_url: str, policy: RoutingPolicy, *,
                 call_timeout_s: float = 120.0, history: CallHistory | None = None) -> None:
        self._url = redis_url
        self._history = history
        self._policy = policy
        self._call_timeout_s = call_timeout_s
        self._runner: ScriptRunner | None = None
        self._prefix = secrets.token_hex(6)  # members unique across processes and hosts
        self._ids = itertools.count()
        self._shapes: dict[tuple[Any, ...], tuple[tuple[Deployment, ...], tuple[str, ...],
                                                  tuple[Any, ...]]] = {}
        self._settle_shapes: dict[str, tuple[Deployment, tuple[str, ...], tuple[Any, ...]]] = {}

    def _member(self) -> str:
        """A new admission's member in the windows (cheaper than random bytes per call)."""
        return f"{self._prefix}{next(self._ids):x}"

    def _scripts(self) -> ScriptRunner:
        if self._runner is None:  # created on first use, on the loop that uses it
            self._runner = ScriptRunner(self._url, {"admit": ADMIT, "settle": SETTLE,
                                                    "peek": PEEK, "seed": SEED},
                                        first=("settle",))
        return self._runner

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await _reply(self._scripts().submit(name, keys, args))

    def lease_ms(self, dep: Deployment) -> int:
        return int(((dep.timeout_s or self._call_timeout_s) + LEASE_MARGIN_S) * 1000)

    def _admit_shape(self, ordering: Ordering, dry_run: bool, now_ms: int | None
                     ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        """The admission script's keys and shared arguments for these candidates (remembered
        per candidate list: they change only with the catalog)."""
        deps = ordering.deployments
        cache_key = (*(dep.name for dep in deps), ordering.sort_by, dry_run)
        if now_ms is None:
            known = self._shapes.get(cache_key)
            if known is not None and all(a is b for a, b in zip(known[0], deps, strict=True)):
                return known[1], known[2]
        keys: list[str] = []
        shared: list[Any] = ["" if now_ms is None else now_ms, int(dry_run), ordering.sort_by]
        for dep in deps:
            keys += [*_keys(dep), route_key(dep.name, "seeded")]
            shared += [dep.rpm or 0, dep.tpm or 0, dep.max_concurrency or 0,
                       int(dep.limit_window_s * 1000), self.lease_ms(dep), DEFAULT_LATENCY_MS]
        shape = (tuple(deps), tuple(keys), tuple(shared))
        if now_ms is None:
            if len(self._shapes) >= MAX_SHAPES:  # shuffled orders of a large group
                self._shapes.clear()
            self._shapes[cache_key] = shape
        return shape[1], shape[2]

    async def admit(self, ordering: Ordering, tokens: int, *, dry_run: bool = False,
                    now_ms: int | None = None) -> Admission | Refusal:
        """Admit the call to the first deployment of ``ordering`` with health and room.

        Admissions to the same candidates queued in one loop iteration run as one script call,
        one after another in the order queued."""
        deps = ordering.deployments
        keys, shared = self._admit_shape(ordering, dry_run, now_ms)

        async def ask() -> Any:
            item = (self._member(), tokens)
            return await _reply(self._scripts().submit_item("admit", keys, shared, item))

        index, wait_ms, probe, member, raw = await ask()
        if _text(member) == "seed":  # Redis lost the windows: ask the database, then again
            for i, _, _ in raw:
                await self._seed(deps[i - 1])
            index, wait_ms, probe, member, raw = await ask()
            if _text(member) == "seed":
                raise RoutingStateError("the deployments' windows could not be seeded")
        if index:
            dep = deps[index - 1]
            held = min(tokens, dep.tpm) if dep.tpm else tokens
            return Admission(dep, _text(member), held, bool(probe))
        reasons = tuple((deps[i - 1].name, _text(why), ms / 1000) for i, why, ms in raw)
        return Refusal(_text(member) == "saturated", wait_ms / 1000, reasons)

    async def _seed(self, dep: Deployment) -> None:
        """Put the deployment's calls of the last window, as the database has them, back into
        its window (once: the script ignores a second seeding)."""
        window_ms = int(dep.limit_window_s * 1000)
        calls: list[tuple[float, int]] = []
        if self._history is not None:
            since = time.time() - dep.limit_window_s
            try:
                calls = await asyncio.to_thread(self._history, dep.name, since)
            except Exception as exc:  # the database is down: wait for it, admit nothing
                raise RoutingStateError(f"the calls of {dep.name!r} could not be read from "
                                        f"the database ({type(exc).__name__})") from exc
        args: list[Any] = ["", window_ms]
        for n, (at, used) in enumerate(calls):
            ms = int(at * 1000)
            args += [f"seed{secrets.token_hex(4)}{n}|{used}|{ms}", ms]
        keys = [route_key(dep.name, "window"), route_key(dep.name, "tokens"),
                route_key(dep.name, "seeded")]
        await self._run("seed", keys, args)

    async def settle(self, admission: Admission, verdict: Verdict, *, tokens: int,
                     latency_ms: float | None = None, cool_s: float = 0.0,
                     now_ms: int | None = None) -> bool:
        """Record how the call ended: actual tokens, health, latency. True if it opened the
        breaker."""
        return bool(await _reply(self.settle_soon(admission, verdict, tokens=tokens,
                                                  latency_ms=latency_ms, cool_s=cool_s,
                                                  now_ms=now_ms)))

    def settle_soon(self, admission: Admission, verdict: Verdict, *, tokens: int,
                    latency_ms: float | None = None, cool_s: float = 0.0,
                    now_ms: int | None = None) -> asyncio.Future[Any]:
        """``settle``, queued now. The script's reply comes on the future, truthy if the call
        opened the breaker; Redis's errors come as raised (a future, not a coroutine: the
        caller may read it from a done callback, with no task per call).

        Reports to one deployment queued in one loop iteration run as one script call, in the
        order queued, and before the admissions queued in that iteration: a report only frees
        room or moves health, so applying it first never admits what its own order would not
        have."""
        dep = admission.deployment
        keys, shared = self._settle_shape(dep, now_ms)
        item = (admission.member, tokens, verdict.value, latency_ms or 0, int(admission.probe),
                int(cool_s * 1000))
        return self._scripts().submit_item("settle", keys, shared, item)

    def _settle_shape(self, dep: Deployment, now_ms: int | None
                      ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        """The settle script's keys and shared arguments for ``dep`` (remembered, as above)."""
        if now_ms is None:
            known = self._settle_shapes.get(dep.name)
            if known is not None and known[0] is dep:
                return known[1], known[2]
        b = self._policy.breaker
        keys = tuple(_keys(dep)[:3])
        shared = ("" if now_ms is None else now_ms, int(dep.limited),
                  int(dep.limit_window_s * 1000), b.consecutive_failures, b.failure_rate,
                  b.min_calls, int(b.window_s * 1000), int(b.cooldown_s * 1000),
                  self._policy.latency_alpha, HEALTH_TTL_MS)
        if now_ms is None:
            self._settle_shapes[dep.name] = (dep, keys, shared)
        return keys, shared

    async def peek(self, deps: Sequence[Deployment], *, now_ms: int | None = None
                   ) -> dict[str, DeploymentState]:
        """Each deployment's shared state now (read only)."""
        keys = [k for dep in deps for k in _keys(dep)]
        args = ["" if now_ms is None else now_ms,
                *(int(dep.limit_window_s * 1000) for dep in deps)]
        now, rows = await self._run("peek", keys, args)
        states = {}
        for dep, row in zip(deps, rows, strict=True):
            flying, count, used, latency, *rest = (int(v) for v in row)
            states[dep.name] = DeploymentState(int(now), flying, count, used,
                                               None if latency < 0 else float(latency), *rest)
        return states

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.aclose()
            self._runner = None


async def _reply(future: asyncio.Future[Any]) -> Any:
    try:
        return await future
    except _UNREACHABLE as exc:
        raise RoutingStateError(
            f"the routing state in Redis does not answer ({type(exc).__name__}: {exc})"
        ) from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
