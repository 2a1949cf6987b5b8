"""The worker's Celery configuration: what a setting turns on or off."""

from __future__ import annotations

import pytest

from schemas.settings import Settings, WorkerSettings
from workers.app import create_app


@pytest.mark.parametrize("wanted", [False, True])
def test_task_events_follow_the_setting(wanted: bool) -> None:
    settings = Settings(worker=WorkerSettings(task_events=wanted))
    assert create_app(settings).conf.worker_send_task_events is wanted


def test_task_events_are_off_by_default_and_read_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().worker.task_events is False
    monkeypatch.setenv("BATCHYARD_WORKER__TASK_EVENTS", "true")
    assert create_app(Settings()).conf.worker_send_task_events is True
