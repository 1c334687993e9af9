"""The user's Fleet API token pair in a Kubernetes Secret (`spec.fleetApi.userTokenSecretRef`).

A refresh token works once, so `save()` must have stored the new pair when it returns: the
Fleet API client uses the new access token only then (`fleetwire.operator.clients.fleetapi_types`
defines the `TokenStore` protocol this implements).
"""

from __future__ import annotations

import base64

from fleetwire.operator.clients.fleetapi_errors import TokenStoreError
from fleetwire.operator.clients.fleetapi_types import Tokens
from fleetwire.operator.clients.kube import KINDS, KubeError, KubernetesApi, secret_value

__all__ = ["SecretTokenStore"]


def _encoded(value: str) -> str:
    return base64.b64encode(value.encode()).decode("ascii")


class SecretTokenStore:
    """The user's token pair in a Secret: `refresh_token`, `access_token`, `expires_at`.

    `save()` returns once the API server has stored the new pair (a merge patch of the
    Secret's data): only then does the client use the new access token, since the refresh
    token it replaced no longer works.
    """

    def __init__(self, api: KubernetesApi, namespace: str, name: str) -> None:
        self.api, self.namespace, self.name = api, namespace, name

    def __repr__(self) -> str:
        return f"SecretTokenStore({self.namespace}/{self.name})"

    async def load(self) -> Tokens:
        try:
            secret = await self.api.get("Secret", self.namespace, self.name)
        except KubeError as exc:
            raise TokenStoreError(f"cannot read Secret {self.namespace}/{self.name}: {exc}") from None
        if secret is None:
            raise TokenStoreError(f"Secret {self.namespace}/{self.name} (spec.fleetApi.userTokenSecretRef) does not "
                                  "exist: create it with the user's refresh_token")
        refresh = secret_value(secret, "refresh_token")
        if not refresh:
            raise TokenStoreError(f"Secret {self.namespace}/{self.name} has no refresh_token: the user must "
                                  "authorize the app and the refresh token be stored there")
        access = secret_value(secret, "access_token") or ""
        try:
            expires_at = float(secret_value(secret, "expires_at") or 0.0)
        except ValueError:
            expires_at = 0.0
        return Tokens(access, refresh, expires_at if access else 1.0)  # no access token yet: refresh first

    async def save(self, tokens: Tokens) -> None:
        data = {"access_token": _encoded(tokens.access_token), "refresh_token": _encoded(tokens.refresh_token),
                "expires_at": _encoded(repr(tokens.expires_at))}
        await self.api.request("PATCH", KINDS["Secret"].path(self.namespace, self.name), {"data": data},
                               content_type="application/merge-patch+json")
