"""Everything one mock upstream server holds at runtime, kept on its aiohttp application."""

from __future__ import annotations

import random
from typing import Any

from aiohttp import web

from mock_upstream.config import MockConfig
from mock_upstream.ratelimit import SlidingWindow
from mock_upstream.stats import Stats

__all__ = ["STATE", "MockState"]


class MockState:
    """The live config, the random draws, the rate-limit window and the stats of one server."""

    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.limiter = SlidingWindow()
        self.stats = Stats()

    def reset(self) -> None:
        """Back to a fresh start (config kept): stats, rate-limit window and the seed's draws."""
        self.stats.reset()
        self.limiter.clear()
        self.rng.seed(self.config.seed)

    def patch_config(self, patch: dict[str, Any]) -> None:
        """Change some config fields in place, all or none (pydantic ``ValidationError``)."""
        merged = MockConfig.model_validate({**self.config.model_dump(), **patch})
        for name in patch:
            setattr(self.config, name, getattr(merged, name))
        if "seed" in patch:
            self.rng.seed(self.config.seed)


STATE = web.AppKey("mock_state", MockState)
