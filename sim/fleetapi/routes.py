"""The aiohttp plumbing: the routes, the middleware (injected faults, error bodies, request
counts), which port a request came in on, and request bodies."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from fleetwire.sim.fleetapi.state import VehicleState, _ApiError


class _Http:
    """Mixin of `FleetApiSimulator`: the HTTP side shared by every endpoint."""

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        """The endpoints (the token's region decides which port may answer a call)."""
        router.add_post("/oauth2/v3/token", self._token)
        router.add_get("/api/1/users/region", self._user_region)
        router.add_post("/api/1/partner_accounts", self._register)
        router.add_get("/api/1/partner_accounts/fleet_telemetry_errors", self._telemetry_errors)
        router.add_post("/api/1/vehicles/fleet_status", self._fleet_status)
        router.add_post("/api/1/vehicles/fleet_telemetry_config_jws", self._push_jws)
        router.add_post("/api/1/vehicles/fleet_telemetry_config", self._push_unsigned)
        router.add_get("/api/1/vehicles/{vin}/fleet_telemetry_config", self._get_config)
        router.add_delete("/api/1/vehicles/{vin}/fleet_telemetry_config", self._delete_config)
        router.add_get("/health", self._health)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
        route = request.match_info.route.resource
        pattern = route.canonical if route is not None else request.path
        try:
            if self._faults and request.path.startswith("/api/"):
                status = self._faults.pop(0)
                raise _ApiError(status, "upstream internal error" if status >= 500 else "injected failure")
            response = await handler(request)
        except _ApiError as exc:
            response = web.json_response(
                {"response": None, "error": exc.error, "error_description": exc.description,
                 "txid": uuid.uuid4().hex}, status=exc.status, headers=exc.headers,
            )
        except web.HTTPException as exc:
            self.requests[(pattern, exc.status)] = self.requests.get((pattern, exc.status), 0) + 1
            raise
        self.requests[(pattern, response.status)] = self.requests.get((pattern, response.status), 0) + 1
        return response

    def _site(self, request: web.Request) -> str:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        return self._port_site.get(int(sockname[1]), "?") if sockname else "?"

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _ApiError(400, "invalid JSON body") from None
        if not isinstance(data, dict):
            raise _ApiError(400, "the body must be a JSON object")
        return data

    def _vins(self, data: Mapping[str, Any]) -> list[str]:
        vins = data.get("vins")
        if not isinstance(vins, list) or not vins or not all(isinstance(v, str) for v in vins):
            raise _ApiError(400, "vins must be a non-empty list of VINs")
        unknown = [v for v in vins if v not in self._vehicles]
        if unknown:
            raise _ApiError(404, "not_found", f"unknown vehicle(s): {', '.join(unknown[:5])}")
        return vins

    def _state(self, request: web.Request) -> VehicleState:
        state = self._vehicles.get(request.match_info["vin"])
        if state is None:
            raise _ApiError(404, "not_found", "vehicle not found")
        return state

    async def _telemetry_errors(self, request: web.Request) -> web.Response:
        grant = self._authorize(request, "partner")
        mine = [dict(e) for e in self._errors.values() if e["name"] == grant.client_id]
        return web.json_response({"response": {"fleet_telemetry_errors": mine}})

    async def _health(self, request: web.Request) -> web.Response:
        if self._site(request) != "proxy":
            raise web.HTTPNotFound()
        return web.Response(text="OK")
