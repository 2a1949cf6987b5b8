"""Serving the mock: the aiohttp application, a blocking ``run`` and ``start_in_thread``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType

from aiohttp import web

from mock_upstream.admin import add_admin_routes
from mock_upstream.config import MockConfig
from mock_upstream.formats import ROUTES
from mock_upstream.handler import llm_handler
from mock_upstream.state import STATE, MockState
from mock_upstream.stats import Stats

__all__ = ["BACKLOG", "MAX_BODY_BYTES", "RunningMock", "create_app", "run", "start_in_thread"]

BACKLOG = 4096
MAX_BODY_BYTES = 64 * 1024 * 1024
"""Requests may carry inline images; aiohttp's default cap is 1 MiB."""
_SHUTDOWN_SECONDS = 0.5
"""How long stopping waits for in-flight (possibly hanging) requests before cancelling them."""
_START_SECONDS = 30.0


def create_app(config: MockConfig) -> web.Application:
    """The mock upstream application; ``config`` stays live (mutate it to change behaviour)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE] = MockState(config)
    for path, fmt in ROUTES:
        app.router.add_post(path, llm_handler(fmt))
    add_admin_routes(app.router)
    return app


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _serve(
    app: web.Application,
    host: str,
    port: int,
    on_ready: Callable[[str], None],
    stop: asyncio.Event,
) -> None:
    """Listen on ``host:port``, call ``on_ready(url)`` once bound, serve until ``stop`` is set."""
    runner = web.AppRunner(
        app, access_log=None, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_SECONDS
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=BACKLOG, reuse_address=True)
        await site.start()
        on_ready(_url(host, runner.addresses[0][1]))
        await stop.wait()
    finally:
        await runner.cleanup()


def run(
    host: str, port: int, config: MockConfig, on_ready: Callable[[str], None] | None = None
) -> None:
    """Serve until SIGINT/SIGTERM; ``on_ready(url)`` runs once the port is bound."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        await _serve(create_app(config), host, port, on_ready or (lambda url: None), stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


class RunningMock:
    """A mock upstream serving from a daemon thread; ``stop()`` (or ``with``) ends it."""

    def __init__(
        self,
        url: str,
        app: web.Application,
        loop: asyncio.AbstractEventLoop,
        stop: asyncio.Event,
        thread: threading.Thread,
    ) -> None:
        self.url = url
        self.state = app[STATE]
        self._loop = loop
        self._stop = stop
        self._thread: threading.Thread | None = thread

    @property
    def config(self) -> MockConfig:
        return self.state.config

    @property
    def stats(self) -> Stats:
        return self.state.stats

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and join the thread; calling it again does nothing."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        thread.join(timeout)

    def __enter__(self) -> RunningMock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_in_thread(config: MockConfig, host: str = "127.0.0.1", port: int = 0) -> RunningMock:
    """Serve on ``host:port`` (0: any free port) from a daemon thread; returns once listening."""
    app = create_app(config)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready: Future[str] = Future()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(_serve(app, host, port, ready.set_result, stop))
        except BaseException as exc:
            if ready.done():
                raise
            ready.set_exception(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=main, name="mock-upstream", daemon=True)
    thread.start()
    return RunningMock(ready.result(timeout=_START_SECONDS), app, loop, stop, thread)
