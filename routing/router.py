"""Choosing a deployment for a model: weighted random over the model group's deployments."""

from __future__ import annotations

import random

from schemas.catalog import Catalog, Deployment
from schemas.errors import UnknownModelError

__all__ = ["Router"]


class Router:
    """Resolves public model names and picks a deployment for each call."""

    def __init__(self, catalog: Catalog, rng: random.Random | None = None) -> None:
        self._catalog = catalog
        self._names = catalog.public_names()
        self._rng = rng or random.Random()

    def resolve(self, model: str) -> str:
        """The model group a public name or alias belongs to."""
        try:
            return self._names[model]
        except KeyError:
            raise UnknownModelError(f"unknown model {model!r}") from None

    def pick(self, model: str) -> Deployment:
        """A deployment for ``model``, drawn by weight."""
        group = self._catalog.models[self.resolve(model)]
        deployments = [self._catalog.deployments[name] for name in group.deployments]
        if len(deployments) == 1:
            return deployments[0]
        weights = [d.weight for d in deployments]
        return self._rng.choices(deployments, weights=weights, k=1)[0]
