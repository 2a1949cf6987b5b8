"""Running the mock: in a thread for tests and benchmarks, and from the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mock_upstream import MockConfig, start_in_thread
from tests.unit.mock_upstream.wire import OPENAI

ROOT = Path(__file__).resolve().parents[3]


def test_start_in_thread_serves_until_stopped() -> None:
    mock = start_in_thread(MockConfig())
    assert mock.url.startswith("http://127.0.0.1:")
    with httpx.Client(base_url=mock.url) as client:
        assert OPENAI.post(client, "hi").status_code == 200
    mock.stop()
    mock.stop()  # a second stop is harmless
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{mock.url}/_mock/health")


def test_stop_does_not_wait_for_hanging_requests() -> None:
    with start_in_thread(MockConfig(timeout_rate=1.0)) as mock:
        with (
            httpx.Client(base_url=mock.url, timeout=0.2) as client,
            pytest.raises(httpx.ReadTimeout),
        ):
            OPENAI.post(client, "hi")
        assert mock.stats.total == 1
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{mock.url}/_mock/health")


def test_two_mocks_are_independent() -> None:
    with (
        start_in_thread(MockConfig()) as first,
        start_in_thread(MockConfig(error_rate=1)) as second,
    ):
        assert first.url != second.url
        with httpx.Client(base_url=first.url) as client:
            assert OPENAI.post(client, "hi").status_code == 200
        with httpx.Client(base_url=second.url) as client:
            assert OPENAI.post(client, "hi").status_code == 500
        assert (first.stats.total, second.stats.total) == (1, 1)


def test_a_taken_port_raises() -> None:
    with start_in_thread(MockConfig()) as mock:
        port = int(mock.url.rsplit(":", 1)[1])
        with pytest.raises(OSError):
            start_in_thread(MockConfig(), port=port)


def test_module_entry_point_announces_its_url() -> None:
    command = [
        sys.executable,
        "-m",
        "mock_upstream",
        "--port",
        "0",
        "--error-rate",
        "1",
        "--seed",
        "1",
    ]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            assert line.startswith("mock upstream listening on http://127.0.0.1:")
            url = line.rsplit(" ", 1)[1]
            with httpx.Client(base_url=url) as client:
                assert OPENAI.post(client, "hi").status_code == 500
                assert client.get("/_mock/config").json()["seed"] == 1
        finally:
            process.terminate()
        assert process.wait(timeout=10) == 0
