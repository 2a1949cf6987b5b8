from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from mock_upstream import MockConfig, RunningMock, start_in_thread


@pytest.fixture
def serve() -> Iterator[Callable[..., RunningMock]]:
    """Start mock upstreams with the given config fields; all are stopped after the test."""
    started: list[RunningMock] = []

    def start(**config: Any) -> RunningMock:
        running = start_in_thread(MockConfig(**config))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def upstream(serve: Callable[..., RunningMock]) -> RunningMock:
    return serve()


@pytest.fixture
def client(upstream: RunningMock) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=upstream.url, timeout=10.0) as http:
        yield http
