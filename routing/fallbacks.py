"""Fallback chains: which model groups a request may move to, and in what order.

A model group lists ``fallbacks`` (other model groups). The chain of a group is the group
itself, then its fallbacks in the listed order, then theirs (breadth first), each group once,
so a cycle (a → b → a) ends instead of looping. A request moves along its chain when:

- its prompt does not fit any deployment of a group (the context-window fallback: the token
  estimate of ``routing.tokens`` against each deployment's ``context_window``), or the
  upstream rejected it as too long;
- every deployment of a group is unhealthy (breaker open, cooling down after a 429), or has
  failed this attempt with a deployment-health error.

A group that is merely at its limits is not left: the request waits for capacity there (a
fallback model is a different model, not spare capacity of the same one).
"""

from __future__ import annotations

from collections import deque

from schemas.catalog import Catalog

__all__ = ["chain"]


def chain(catalog: Catalog, group: str) -> list[str]:
    """``group`` and every group it may fall back to, in the order they are tried."""
    order: list[str] = []
    todo = deque([group])
    while todo:
        name = todo.popleft()
        if name in order:
            continue
        order.append(name)
        todo.extend(catalog.models[name].fallbacks)
    return order
