"""The webhook commands the way an operator uses them: make a secret, submit with a webhook
and a window, list deliveries with their attempts, redeliver an event."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from schemas.webhooks import decode_secret
from tests.helpers import ROOT, wait_for
from tests.stack import Stack
from tests.webhook_receiver import receiver


def _run(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchyard", *args], env=stack.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_list_and_redeliver_webhooks_through_the_cli(stack: Stack, tmp_path: Path) -> None:
    secret = _run(stack, "webhooks", "secret").stdout.strip()
    assert secret.startswith("whsec_") and len(decode_secret(secret)) == 32
    stack.env.update({"BATCHYARD_WEBHOOKS__SECRET": secret,
                      "BATCHYARD_WEBHOOKS__ALLOW": "127.0.0.1",
                      "BATCHYARD_WEBHOOKS__POLL_S": "0.1"})
    stack.start_worker()
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({
        "custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "small", "messages": [{"role": "user", "content": f"hi {i}"}]},
    }) + "\n" for i in range(5)))

    with receiver() as hook:
        submitted = _run(stack, "submit", str(source), "--webhook-url", hook.url,
                         "--completion-window", "1h", "--wait", "--json")
        assert submitted.returncode == 0, submitted.stderr
        job = json.loads(submitted.stdout[submitted.stdout.index("{"):])
        wait_for(lambda: hook.received, 30, "the first delivery")
        listed = json.loads(_run(stack, "webhooks", "list", job["id"], "--json").stdout)
        event_id = listed[0]["event_id"]
        again = _run(stack, "webhooks", "redeliver", event_id)
        wait_for(lambda: len(hook.received) == 2, 30, "the redelivery")
        table = _run(stack, "webhooks", "list", job["id"])

    assert job["completion_window"] == "1h" and job["webhook_url"] == hook.url
    assert listed[0]["event_type"] == "job.completed" and listed[0]["job_id"] == job["id"]
    assert listed[0]["attempt_log"][0]["status_code"] == 200
    assert again.returncode == 0 and f"of {event_id}" in again.stdout
    assert [r.headers["webhook-id"] for r in hook.received] == [event_id, event_id]
    assert Webhook(secret).verify(hook.received[1].body, hook.received[1].headers)
    assert table.returncode == 0 and "attempt 1" in table.stdout and event_id in table.stdout
