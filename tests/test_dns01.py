"""DNS-01: the Cloudflare provider against a local fake of its API, and the test resolver
pebble asks (A for any name, TXT once published)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from aiohttp import web
from conftest import LocalDns
from dnslib import DNSRecord

from fleetwire.operator.clients.dns01 import CloudflareDns, DnsProvider, DnsProviderError


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ======================================================================================
# Cloudflare provider against a local fake of its API
# ======================================================================================


class FakeCloudflare:
    """Records every request; answers like Cloudflare's v4 API for one zone."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], str | None, Any]] = []
        self.records: list[dict[str, Any]] = []
        self.fail_with: tuple[int, dict[str, Any]] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json() if request.can_read_body else {}
        self.requests.append(
            (request.method, request.path, dict(request.query), request.headers.get("Authorization"), body or None)
        )
        if self.fail_with is not None:
            return web.json_response(self.fail_with[1], status=self.fail_with[0])
        if request.method == "POST":
            if any(r["content"] == body["content"] and r["name"] == body["name"] for r in self.records):
                return web.json_response(
                    {"success": False, "errors": [{"code": 81058, "message": "An identical record already exists."}]},
                    status=400,
                )
            record = {"id": f"rec{len(self.records) + 1}", **body}
            self.records.append(record)
            return web.json_response({"success": True, "errors": [], "messages": [], "result": record})
        if request.method == "GET":
            query = request.query
            found = [r for r in self.records if r["type"] == query["type"] and r["name"] == query["name"]]
            return web.json_response({"success": True, "errors": [], "result": found})
        record_id = request.match_info["id"]
        self.records = [r for r in self.records if r["id"] != record_id]
        return web.json_response({"success": True, "errors": [], "result": {"id": record_id}})


@pytest.fixture
async def fake_cloudflare() -> Any:
    fake = FakeCloudflare()
    app = web.Application()
    app.router.add_route("*", "/client/v4/zones/{zone}/dns_records", fake.handle)
    app.router.add_route("DELETE", "/client/v4/zones/{zone}/dns_records/{id}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield fake, f"http://127.0.0.1:{port}/client/v4"
    await runner.cleanup()


async def test_cloudflare_set_and_clear_exact_requests(fake_cloudflare: Any) -> None:
    fake, base = fake_cloudflare
    cf = CloudflareDns("tok-123", "zone9", base_url=base)
    assert isinstance(cf, DnsProvider) and "tok-123" not in repr(cf)
    name = "_acme-challenge.telemetry.fleetwire.test"
    fake.records.append({"id": "keep", "type": "TXT", "name": name, "content": '"other"', "ttl": 60})
    try:
        await cf.set_txt(name, "v4lue")
        await cf.set_txt(name, "v4lue")  # a retry: the identical record is fine
        await cf.clear_txt(name, "v4lue")
    finally:
        await cf.aclose()
    path = "/client/v4/zones/zone9/dns_records"
    body = {"type": "TXT", "name": name, "content": '"v4lue"', "ttl": 60}
    assert fake.requests == [
        ("POST", path, {}, "Bearer tok-123", body),
        ("POST", path, {}, "Bearer tok-123", body),
        ("GET", path, {"type": "TXT", "name": name, "per_page": "100"}, "Bearer tok-123", None),
        ("DELETE", f"{path}/rec2", {}, "Bearer tok-123", None),
    ]
    assert [r["id"] for r in fake.records] == ["keep"]


async def test_cloudflare_errors_say_what_to_fix(fake_cloudflare: Any) -> None:
    fake, base = fake_cloudflare
    fake.fail_with = (403, {"success": False, "errors": [{"code": 10000, "message": "Authentication error"}]})
    cf = CloudflareDns("bad", "zone9", base_url=base)
    try:
        with pytest.raises(DnsProviderError, match=r"HTTP 403.*10000: Authentication error.*DNS Edit on zone zone9"):
            await cf.set_txt("_acme-challenge.a.fleetwire.test", "v")
    finally:
        await cf.aclose()
    gone = CloudflareDns("t", "z", base_url=f"http://127.0.0.1:{_free_port()}/client/v4")
    try:
        with pytest.raises(DnsProviderError, match="cannot reach the Cloudflare API"):
            await gone.clear_txt("_acme-challenge.a.fleetwire.test", "v")
    finally:
        await gone.aclose()


async def test_local_dns_answers_pebble_style_queries(local_dns: LocalDns) -> None:
    """The test resolver itself: A for any name, TXT only once published."""
    await local_dns.set_txt("_acme-challenge.x.fleetwire.test", "abc")
    try:
        txt = DNSRecord.parse(
            DNSRecord.question("_acme-challenge.x.fleetwire.test", "TXT").send("127.0.0.1", local_dns.port, timeout=2)
        )
        assert [str(r.rdata) for r in txt.rr] == ['"abc"']
        a = DNSRecord.parse(DNSRecord.question("any.fleetwire.test", "A").send("127.0.0.1", local_dns.port, timeout=2))
        assert [str(r.rdata) for r in a.rr] == ["127.0.0.1"]
    finally:
        await local_dns.clear_txt("_acme-challenge.x.fleetwire.test", "abc")
