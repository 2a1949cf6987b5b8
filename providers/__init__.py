"""Upstream wire protocols: one adapter per protocol, and the one client that sends them."""

from __future__ import annotations

from providers.base import Provider
from providers.client import Reply, UpstreamClient
from providers.registry import PROVIDERS, get_provider

__all__ = ["PROVIDERS", "Provider", "Reply", "UpstreamClient", "get_provider"]
