"""`fleetwire check-cert`: each way a vehicle refuses a server, and a good setup that passes."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from fleetwire.operator.policies.certcheck import (
    Report,
    check_config,
    check_port,
    check_server_certificate,
    config_of,
)
from fleetwire.operator.commands.check_cert import fetch_presented_chain
from fleetwire.trust import hostname_matches

from fleetwire.cli import main
from fleetwire.pki import Bundle, make_ca, make_server_cert, write_pem

HOST = "telemetry.example.com"
ALL_CHECKS = [
    "server chain", "ca", "subjectAltName", "not CN-only", "hostname", "chain verifies",
    "ca has the leaf's issuer", "ca is a full chain", "validity", "days left",
]


@pytest.fixture(scope="module")
def root() -> Bundle:
    return make_ca("Check Root CA", path_length=1)


@pytest.fixture(scope="module")
def inter(root: Bundle) -> Bundle:
    return make_ca("Check Intermediate CA", parent=root, path_length=0)


@pytest.fixture(scope="module")
def leaf(inter: Bundle) -> Bundle:
    return make_server_cert(inter, [HOST])


def _chain(leaf: Bundle, *issuers: Bundle) -> bytes:
    return leaf.cert_pem + b"".join(b.cert_pem for b in issuers)


def _failed(report: Report) -> set[str]:
    return {c.name for c in report.failures}


def test_good_setup_passes(root: Bundle, inter: Bundle, leaf: Bundle) -> None:
    config = {"hostname": HOST, "port": 443, "ca": (inter.cert_pem + root.cert_pem).decode()}
    report = check_config(config, _chain(leaf, inter), key_pem=leaf.key_pem)
    assert report.ok and not report.warnings, report.render()
    assert [c.name for c in report.checks] == [*ALL_CHECKS, "key matches", "port"]
    assert report.get("hostname").detail == f"{HOST} matches DNS:{HOST}"
    assert report.get("ca is a full chain").detail.endswith("(self-signed root)")
    assert report.render().splitlines()[-1].startswith("OK: vehicles should accept")


def test_cn_only_certificate_fails_with_the_vehicles_error(root: Bundle, inter: Bundle) -> None:
    cn_only = make_server_cert(inter, [HOST], cn_only=True)
    report = check_server_certificate(_chain(cn_only, inter), inter.cert_pem + root.cert_pem, HOST)
    assert _failed(report) == {"subjectAltName", "not CN-only", "hostname", "chain verifies"}
    assert "legacy Common Name field, use SANs instead" in report.get("not CN-only").detail
    assert "subjectAltName" in report.get("chain verifies").detail


def test_chain_from_another_ca_does_not_verify(leaf: Bundle, inter: Bundle) -> None:
    stranger = make_ca("Stranger Root CA")
    report = check_server_certificate(_chain(leaf, inter), stranger.cert_pem, HOST)
    assert _failed(report) == {"chain verifies", "ca has the leaf's issuer"}
    assert "does not contain the leaf's issuer" in report.get("ca has the leaf's issuer").detail


def test_hostname_mismatch(root: Bundle, inter: Bundle, leaf: Bundle) -> None:
    report = check_server_certificate(_chain(leaf, inter), inter.cert_pem + root.cert_pem, "other.example.com")
    assert _failed(report) == {"hostname", "chain verifies"}
    assert report.get("hostname").detail == f"other.example.com is not among DNS:{HOST}"


def test_wildcard_covers_one_label_only(root: Bundle, inter: Bundle) -> None:
    wildcard = make_server_cert(inter, ["*.example.com"])
    ca = inter.cert_pem + root.cert_pem
    assert check_server_certificate(_chain(wildcard, inter), ca, "a.example.com").ok
    deeper = check_server_certificate(_chain(wildcard, inter), ca, "a.b.example.com")
    assert _failed(deeper) == {"hostname", "chain verifies"}


def test_hostname_matching_rules() -> None:
    san = x509.SubjectAlternativeName([
        x509.DNSName("*.fleet.example.com"), x509.DNSName("Exact.Example.com"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
    ])
    assert hostname_matches("car.fleet.example.com", san) == "DNS:*.fleet.example.com"
    assert hostname_matches("exact.example.COM.", san) == "DNS:Exact.Example.com"
    assert hostname_matches("192.0.2.7", san) == "IP:192.0.2.7"
    for miss in ("fleet.example.com", "a.car.fleet.example.com", "192.0.2.8", "example.com", ".fleet.example.com"):
        assert hostname_matches(miss, san) is None, miss
    top = x509.SubjectAlternativeName([x509.DNSName("*.com")])
    assert hostname_matches("example.com", top) is None  # a wildcard needs two labels under it


def test_expired_and_not_yet_valid(root: Bundle, inter: Bundle, leaf: Bundle) -> None:
    ca = inter.cert_pem + root.cert_pem
    later = leaf.cert.not_valid_after_utc + dt.timedelta(days=3)
    expired = check_server_certificate(_chain(leaf, inter), ca, HOST, now=later)
    assert _failed(expired) == {"validity", "days left", "chain verifies"}
    assert "expired" in expired.get("validity").detail and "(3 days ago)" in expired.get("validity").detail
    earlier = leaf.cert.not_valid_before_utc - dt.timedelta(minutes=5)
    early = check_server_certificate(_chain(leaf, inter), ca, HOST, now=earlier)
    assert "validity" in _failed(early) and "is not valid until" in early.get("validity").detail


def test_few_days_left_warns_without_failing(root: Bundle, inter: Bundle, leaf: Bundle) -> None:
    soon = leaf.cert.not_valid_after_utc - dt.timedelta(days=5)
    report = check_server_certificate(_chain(leaf, inter), inter.cert_pem + root.cert_pem, HOST, now=soon)
    assert report.ok and [w.name for w in report.warnings] == ["days left"]
    assert report.get("days left").symbol == "!" and "under 14 days" in report.get("days left").detail


def test_root_only_ca_fails_like_teslas_check(root: Bundle, inter: Bundle, leaf: Bundle) -> None:
    report = check_server_certificate(_chain(leaf, inter), root.cert_pem, HOST)
    assert report.get("chain verifies").ok  # with the server's intermediate, a path exists
    assert _failed(report) == {"ca has the leaf's issuer"}
    assert "holds CN=Check Root CA but not CN=Check Intermediate CA" in report.get("ca has the leaf's issuer").detail


def test_intermediate_only_ca_is_a_partial_chain_warning(inter: Bundle, leaf: Bundle) -> None:
    report = check_server_certificate(_chain(leaf, inter), inter.cert_pem, HOST)
    assert report.ok and [w.name for w in report.warnings] == ["ca is a full chain"]
    assert report.get("ca is a full chain").detail.startswith("partial chain")
    assert "OK with warnings" in report.verdict


def test_server_without_intermediate_needs_it_in_ca(root: Bundle, inter: Bundle, leaf: Bundle) -> None:
    assert _failed(check_server_certificate(leaf.cert_pem, root.cert_pem, HOST)) >= {"chain verifies"}
    assert check_server_certificate(leaf.cert_pem, inter.cert_pem + root.cert_pem, HOST).ok


@pytest.mark.parametrize(
    ("port", "ok", "words"),
    [(443, True, "is an integer"), ("443", False, "the string '443'"), (True, False, "expected an integer"),
     (None, False, "expected an integer"), (70000, False, "expected an integer")],
)
def test_port_must_be_an_integer(port: object, ok: bool, words: str) -> None:
    check = check_port(port)
    assert check.ok is ok and words in check.detail


def test_string_port_in_config_fails(root: Bundle, inter: Bundle, leaf: Bundle) -> None:
    config = {"hostname": HOST, "port": "443", "ca": (inter.cert_pem + root.cert_pem).decode()}
    assert _failed(check_config(config, _chain(leaf, inter))) == {"port"}


def test_mismatched_and_unreadable_keys(root: Bundle, inter: Bundle, leaf: Bundle) -> None:
    ca = inter.cert_pem + root.cert_pem
    other = make_server_cert(inter, [HOST])
    mismatched = check_server_certificate(_chain(leaf, inter), ca, HOST, key_pem=other.key_pem)
    assert _failed(mismatched) == {"key matches"}
    garbage = check_server_certificate(_chain(leaf, inter), ca, HOST, key_pem=b"not a key")
    assert "cannot read the private key" in garbage.get("key matches").detail


def test_unreadable_inputs_and_wrong_order(root: Bundle, inter: Bundle, leaf: Bundle) -> None:
    nothing = check_server_certificate(b"", root.cert_pem, HOST)
    assert _failed(nothing) == {"server chain"} and len(nothing.checks) == 2
    no_ca = check_server_certificate(_chain(leaf, inter), b"junk", HOST)
    assert {"ca"} <= _failed(no_ca) and "chain verifies" not in {c.name for c in no_ca.checks}
    swapped = check_server_certificate(inter.cert_pem + leaf.cert_pem, root.cert_pem, HOST)
    assert "put the leaf first" in swapped.get("server chain").detail


def test_config_without_hostname_or_ca(leaf: Bundle) -> None:
    assert _failed(check_config({"port": 443, "ca": "x"}, leaf.cert_pem)) == {"config"}
    assert "ca is missing" in check_config({"hostname": HOST, "port": 443}, leaf.cert_pem).get("config").detail


def test_request_bodies_are_read_as_their_config() -> None:
    body = {"vins": ["5YJ3E1EA7KF000001"], "config": {"hostname": HOST}}
    assert config_of(body) == {"hostname": HOST}
    assert config_of({"hostname": HOST, "config": {}}) == {"hostname": HOST, "config": {}}


# -- the command --------------------------------------------------------------------------


def _write_config(path: Path, hostname: str, ca: bytes, port: object = 443) -> Path:
    path.write_text(json.dumps({"hostname": hostname, "port": port, "ca": ca.decode(), "fields": {}}))
    return path


def test_cli_with_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Bundle, inter: Bundle, leaf: Bundle
) -> None:
    config = _write_config(tmp_path / "config.json", HOST, inter.cert_pem + root.cert_pem)
    cert = write_pem(tmp_path / "chain.pem", _chain(leaf, inter))
    key = write_pem(tmp_path / "key.pem", leaf.key_pem, private=True)
    assert main(["check-cert", "--config", str(config), "--cert", str(cert), "--key", str(key)]) == 0
    out = capsys.readouterr().out
    assert "✓ key matches" in out and "✓ port" in out and out.rstrip().splitlines()[-1].startswith("OK:")

    bad = _write_config(tmp_path / "bad.json", HOST, root.cert_pem, port="443")
    assert main(["check-cert", "--config", str(bad), "--cert", str(cert)]) == 1
    out = capsys.readouterr().out
    assert "✗ port" in out and "✗ ca has the leaf's issuer" in out and "FAIL:" in out

    ca = write_pem(tmp_path / "ca.pem", inter.cert_pem)
    assert main(["check-cert", "--hostname", HOST, "--ca", str(ca), "--cert", str(cert)]) == 0
    assert "! ca is a full chain" in capsys.readouterr().out

    assert main(["check-cert", "--ca", str(ca), "--cert", str(cert)]) == 2
    assert "no hostname" in capsys.readouterr().err


@pytest.fixture
async def tls_server(tmp_path: Path, root: Bundle, inter: Bundle) -> AsyncIterator[tuple[int, Bundle]]:
    """A loopback TLS server presenting a leaf for localhost and its intermediate."""
    server_leaf = make_server_cert(inter, ["localhost", "127.0.0.1"])
    cert = write_pem(tmp_path / "server.pem", _chain(server_leaf, inter))
    key = write_pem(tmp_path / "server.key", server_leaf.key_pem, private=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    async with server:
        yield server.sockets[0].getsockname()[1], server_leaf


async def test_cli_connects_to_a_live_server(
    tls_server: tuple[int, Bundle], tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Bundle, inter: Bundle
) -> None:
    port, server_leaf = tls_server
    fetched = await asyncio.to_thread(fetch_presented_chain, "127.0.0.1", port, "localhost")
    if fetched.complete:  # the presented chain, as sent: leaf then intermediate
        presented = x509.load_pem_x509_certificates(fetched.pem)
        assert presented == [server_leaf.cert, inter.cert]

    config = _write_config(tmp_path / "config.json", "localhost", inter.cert_pem + root.cert_pem, port=port)
    key = write_pem(tmp_path / "key.pem", server_leaf.key_pem, private=True)
    argv = ["check-cert", "--config", str(config), "--connect", f"127.0.0.1:{port}", "--key", str(key)]
    assert await asyncio.to_thread(main, argv) == 0
    out = capsys.readouterr().out
    assert f"fetched 127.0.0.1:{port} (SNI localhost) with {fetched.method}" in out
    assert "✓ chain verifies" in out and "✓ hostname: localhost matches DNS:localhost" in out

    wrong = _write_config(tmp_path / "wrong.json", "elsewhere.example.com", inter.cert_pem + root.cert_pem)
    argv = ["check-cert", "--config", str(wrong), "--connect", f"127.0.0.1:{port}"]
    assert await asyncio.to_thread(main, argv) == 1
    assert "✗ hostname: elsewhere.example.com is not among DNS:localhost, IP:127.0.0.1" in capsys.readouterr().out


async def test_cli_reports_an_unreachable_server(tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Bundle) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    config = _write_config(tmp_path / "config.json", "localhost", root.cert_pem)
    argv = ["check-cert", "--config", str(config), "--connect", f"127.0.0.1:{port}"]
    assert await asyncio.to_thread(main, argv) == 2
    assert "cannot fetch the chain" in capsys.readouterr().err


async def test_cli_config_alone_connects_to_its_hostname_and_port(
    tls_server: tuple[int, Bundle], tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Bundle, inter: Bundle
) -> None:
    """`fleetwire check-cert config.json`, as Tesla's check_server_cert.sh takes it: the
    vehicle config alone names the server to check."""
    port, server_leaf = tls_server
    config = _write_config(tmp_path / "config.json", "localhost", inter.cert_pem + root.cert_pem, port=port)
    assert await asyncio.to_thread(main, ["check-cert", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"fetched localhost:{port} (SNI localhost)" in out and "✓ chain verifies" in out

    # --config without --cert or --connect means the same; a request body {"vins", "config"} too.
    body = tmp_path / "request.json"
    body.write_text(json.dumps({"vins": ["5YJ3E1EA7KF000001"], "config": json.loads(config.read_text())}))
    assert await asyncio.to_thread(main, ["check-cert", "--config", str(body)]) == 0
    assert "✓ hostname: localhost matches DNS:localhost" in capsys.readouterr().out

    # The config's own trust decides: a ca that does not hold the issuer fails (exit 1).
    untrusted = _write_config(tmp_path / "untrusted.json", "localhost", make_ca("Other Root").cert_pem, port=port)
    assert await asyncio.to_thread(main, ["check-cert", str(untrusted)]) == 1
    assert "✗ chain verifies" in capsys.readouterr().out


def test_cli_config_alone_needs_a_port_it_can_dial(tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Bundle) -> None:
    config = _write_config(tmp_path / "config.json", "localhost", root.cert_pem, port="https")
    assert main(["check-cert", str(config)]) == 2
    assert "port 'https' cannot be dialled" in capsys.readouterr().err
    assert main(["check-cert", str(config), "--config", str(config)]) == 2  # one config, not two
    assert "either" in capsys.readouterr().err
