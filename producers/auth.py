"""Who is calling: the tenant behind the producer's API key, checked on every call.

The check reads the key's row each time (one primary-key lookup), so a key revoked by
``batchyard keys revoke`` is refused by a running producer on its very next call. With no key
the caller is the ``default`` tenant (the embedded, single-user mode) unless the deployment
set ``BATCHYARD_REQUIRE_API_KEY=1``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr
from sqlalchemy import Engine

from schemas.errors import AccessDeniedError
from schemas.tenants import DEFAULT_TENANT
from storage.tenants import authenticate

__all__ = ["Caller"]


@dataclass(frozen=True)
class Caller:
    """A producer's credentials; ``tenant()`` resolves them afresh on each call."""

    engine: Engine
    api_key: SecretStr | None
    required: bool = False

    def tenant(self) -> str:
        """The caller's tenant id; AccessDeniedError for a bad, revoked or missing key."""
        if self.api_key is None or not self.api_key.get_secret_value():
            if self.required:
                raise AccessDeniedError(
                    "an API key is required (set BATCHYARD_API_KEY or pass --api-key)")
            return DEFAULT_TENANT
        return authenticate(self.engine, self.api_key.get_secret_value())
