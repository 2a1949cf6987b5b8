"""The route a request took, as stored in ``requests.route`` (JSON).

It survives attempts (each claim reads it back and adds to it), so a finished request shows
its whole story::

    {"model": "small", "path": ["small", "large"],
     "calls": [{"attempt": 1, "model": "small", "deployment": "a", "status": 500,
                "error": "server_error", "ms": 12.5},
               {"attempt": 1, "model": "large", "deployment": "c", "status": 200, "ms": 80.1}],
     "waits": 2, "last_wait": "a: rpm full (3.2s)"}

``path`` is the fallback path: the model groups that were called, in order; ``skipped`` (when
present) names the groups of the chain the request could not use and why, e.g. a prompt
longer than their context window. ``waits`` counts the times the request waited for capacity
or health (those do not use up attempts).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from routing.router import Ticket

__all__ = ["MAX_CALLS", "Trail"]

MAX_CALLS = 50
"""Calls kept in a trail (the most recent), so a request retried for days stays small."""
_ENCODER = json.JSONEncoder(separators=(",", ":"))
"""``json.dumps`` with any argument builds an encoder per call; a trail is written per call."""


class Trail:
    """A request's route, built up across attempts."""

    def __init__(self, model: str, data: dict[str, Any] | None = None) -> None:
        self.data: dict[str, Any] = data or {"model": model, "path": [], "calls": [],
                                             "waits": 0}

    @classmethod
    def resume(cls, text: str | None, model: str) -> Trail:
        """The trail stored by earlier attempts (a fresh one if none, or if unreadable)."""
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = None
        return cls(model, data if isinstance(data, dict) and "calls" in data else None)

    def call(self, attempt: int, ticket: Ticket, *, status: int | None,
             error: str | None = None, ms: float | None = None) -> None:
        """Note one upstream call and the group it belonged to."""
        model = ticket.model
        entry: dict[str, Any] = {"attempt": attempt, "model": model,
                                 "deployment": ticket.deployment.name, "status": status}
        if error:
            entry["error"] = error
        if ms is not None:
            entry["ms"] = round(ms, 1)
        if ticket.admission.probe:
            entry["probe"] = True
        self.data["calls"] = [*self.data["calls"], entry][-MAX_CALLS:]
        if model not in self.data["path"]:
            self.data["path"].append(model)

    def planned(self, skipped: tuple[tuple[str, str], ...]) -> None:
        """Note the model groups of the chain this request could not use, and why."""
        if skipped:
            self.data["skipped"] = dict(skipped)

    def waited(self, why: str) -> None:
        """Note a wait for capacity or health."""
        self.data["waits"] = int(self.data.get("waits", 0)) + 1
        self.data["last_wait"] = why[:500]

    @property
    def calls(self) -> list[dict[str, Any]]:
        return list(self.data["calls"])

    def dumps(self) -> str:
        return _ENCODER.encode(self.data)
