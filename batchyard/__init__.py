"""batchyard: the command line, the demo and the local services it can start."""

from __future__ import annotations

__all__: list[str] = []
