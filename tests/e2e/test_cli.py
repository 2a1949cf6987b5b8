"""The CLI the way a user drives it: submit, wait, status, results, cancel, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.stack import Stack

COMMANDS = ["worker", "submit", "status", "wait", "results", "cancel", "mock-upstream",
            "db", "flower", "demo"]


def _run(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchyard", *args], env=stack.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def _batch_file(path: Path, n: int, model: str = "small") -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"custom_id": f"row-{i}", "method": "POST",
                                 "url": "/v1/chat/completions",
                                 "body": {"model": model, "max_tokens": 20, "messages": [
                                     {"role": "user", "content": f"Say hello to {i}"}]}}) + "\n")
    return path


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_submit_wait_status_and_results_through_the_cli(stack: Stack, tmp_path: Path) -> None:
    stack.start_worker()
    source = _batch_file(tmp_path / "in.jsonl", 25)

    submitted = _run(stack, "submit", str(source), "--tier", "high", "--meta", "team=eval",
                     "--json")
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]
    waited = _run(stack, "wait", job_id, "--quiet", "--timeout", "120", "--json")
    status = json.loads(_run(stack, "status", job_id, "--json").stdout)
    out, err = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    exported = _run(stack, "results", job_id, "-o", str(out), "--errors", str(err))

    assert waited.returncode == 0, waited.stderr
    assert status["status"] == "completed"
    assert status["counts"]["succeeded"] == 25
    assert status["metadata"] == {"team": "eval"}
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == [f"row-{i}" for i in range(25)]
    assert all(line["response"]["status_code"] == 200 for line in lines)
    assert lines[0]["response"]["body"]["choices"][0]["message"]["content"]
    assert err.read_text() == ""


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_bad_input_and_unknown_jobs_get_clear_errors(stack: Stack, tmp_path: Path) -> None:
    source = _batch_file(tmp_path / "in.jsonl", 3, model="no-such-model")
    with source.open("a") as fh:
        fh.write("{oops\n")

    rejected = _run(stack, "submit", str(source))
    unknown = _run(stack, "status", "batch_doesnotexist")

    assert rejected.returncode == 2
    assert "line 1: unknown model 'no-such-model'" in rejected.stderr
    assert "line 4: bad JSON" in rejected.stderr
    assert unknown.returncode == 2 and "no job 'batch_doesnotexist'" in unknown.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_cancel_through_the_cli_cancels_what_has_not_run(stack: Stack, tmp_path: Path) -> None:
    source = _batch_file(tmp_path / "in.jsonl", 50)
    job_id = json.loads(_run(stack, "submit", str(source), "--json").stdout)["id"]

    cancelled = _run(stack, "cancel", job_id, "--json")

    assert cancelled.returncode == 0, cancelled.stderr
    view = json.loads(cancelled.stdout)
    assert view["status"] == "cancelled"
    assert view["counts"]["cancelled"] == 50


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_useful_help(command: str) -> None:
    result = subprocess.run([sys.executable, "-m", "batchyard", command, "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout and len(result.stdout.splitlines()) > 4
