"""Tenants and keys through the CLI: create, list, show, revoke, and --api-key scoping."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.stack import Stack


def _run(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchyard", *args], env=stack.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_tenants_and_keys_from_the_command_line(stack: Stack, tmp_path: Path) -> None:
    assert _run(stack, "tenants", "create", "acme", "--rpm", "60", "--budget", "5").returncode == 0
    assert _run(stack, "tenants", "create", "globex").returncode == 0
    dup = _run(stack, "tenants", "create", "acme")
    key = _run(stack, "keys", "create", "--tenant", "acme").stdout.strip()
    other = _run(stack, "keys", "create", "--tenant", "globex").stdout.strip()
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                                  "body": {"model": "small", "messages": [
                                      {"role": "user", "content": "hi"}]}}) + "\n")
    job = json.loads(_run(stack, "--api-key", key, "submit", str(source), "--json").stdout)
    mine = _run(stack, "--api-key", key, "status", job["id"], "--json")
    theirs = _run(stack, "--api-key", other, "status", job["id"])
    shown = json.loads(_run(stack, "tenants", "show", "acme", "--json").stdout)
    told = _run(stack, "tenants", "show", "acme").stdout
    listed = json.loads(_run(stack, "keys", "list", "--tenant", "acme", "--json").stdout)
    revoked = _run(stack, "keys", "revoke", listed[0]["id"])
    after = _run(stack, "--api-key", key, "status", job["id"])

    assert dup.returncode == 2 and "already exists" in dup.stderr
    assert job["tenant_id"] == "acme" and mine.returncode == 0
    assert theirs.returncode == 2 and f"no job '{job['id']}'" in theirs.stderr
    assert shown["limits"]["rpm"] == 60 and shown["limits"]["budget"]["amount"] == "5"
    assert "spent $0.000000 of $5 this monthly period (0%)" in told
    assert key not in json.dumps(listed) and listed[0]["id"] == key[:12]
    assert revoked.returncode == 0
    assert after.returncode == 2 and "invalid or revoked API key" in after.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_keys_own_limits_from_the_command_line(stack: Stack) -> None:
    assert _run(stack, "tenants", "create", "acme").returncode == 0
    made = _run(stack, "keys", "create", "--tenant", "acme", "--name", "ci", "--max-queued",
                "10", "--budget", "2", "--budget-period", "daily", "--on-budget-exceeded",
                "pause")
    key_id = made.stdout.strip()[:12]
    listed = json.loads(_run(stack, "keys", "list", "--json").stdout)
    changed = _run(stack, "keys", "limits", key_id, "--rpm", "5")
    relisted = json.loads(_run(stack, "keys", "list", "--json").stdout)
    unknown = _run(stack, "keys", "limits", "bya_00000000", "--rpm", "5")

    assert made.returncode == 0
    assert listed[0]["limits"]["max_queued"] == 10
    assert listed[0]["limits"]["budget"] == {"amount": "2", "period": "daily",
                                             "rolling_s": None, "alert_at": 0.8,
                                             "on_exceeded": "pause"}
    assert changed.returncode == 0 and f"key {key_id} (tenant acme) limits: rpm=5" in changed.stdout
    assert relisted[0]["limits"]["rpm"] == 5 and relisted[0]["limits"]["budget"] is None
    assert unknown.returncode == 2 and "no API key 'bya_00000000'" in unknown.stderr
