"""Benchmarks: ``python -m bench.run [--quick]`` measures batchyard against the direct-call
limit, LiteLLM's proxy and a Celery task per request; docs/PERFORMANCE.md keeps the figures.

``python -m bench.chaos`` is the fault-injection run (kills, lost Redis, a failing upstream).
Modules are run as scripts or imported by the runner; nothing here is a library API.
"""

__all__: list[str] = []
