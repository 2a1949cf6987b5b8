"""The engine's event loop: uvloop unless the setting or a missing install says otherwise."""

from __future__ import annotations

import asyncio
import builtins
import logging
from typing import Any

import pytest
import uvloop
from pydantic import ValidationError

from schemas.settings import Settings, WorkerSettings
from workers.engine import new_loop


def _run_on(loop: asyncio.AbstractEventLoop) -> int:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42
    try:
        return loop.run_until_complete(answer())
    finally:
        loop.close()


def test_the_engine_runs_on_uvloop_by_default() -> None:
    loop = new_loop(Settings().worker.event_loop)
    assert isinstance(loop, uvloop.Loop)
    assert _run_on(loop) == 42


def test_the_setting_picks_asyncios_own_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHYARD_WORKER__EVENT_LOOP", "asyncio")
    loop = new_loop(Settings().worker.event_loop)
    assert not isinstance(loop, uvloop.Loop)
    assert _run_on(loop) == 42


def test_an_unknown_loop_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="event_loop"):
        WorkerSettings(event_loop="trio")  # type: ignore[arg-type]


def test_without_uvloop_installed_the_engine_falls_back_and_says_so(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    real_import = builtins.__import__

    def no_uvloop(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    with caplog.at_level(logging.WARNING, logger="workers.engine"):
        loop = new_loop("uvloop")
    assert not isinstance(loop, uvloop.Loop)
    assert "uvloop is not installed" in caplog.text
    assert _run_on(loop) == 42
