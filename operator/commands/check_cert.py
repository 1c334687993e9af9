"""`fleetwire check-cert`: fetch the chain a live server presents, and judge a setup by the
vehicles' rules (`fleetwire.operator.policies.certcheck`, the pure report), before a config
is pushed: a vehicle's refusal otherwise shows only in Tesla's telemetry errors, hours later.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleetwire.operator.policies.certcheck import check_config, check_server_certificate, config_of
from fleetwire.trust import ip_literal

__all__ = ["FetchedChain", "dial_target", "fetch_presented_chain", "run"]


@dataclass(frozen=True)
class FetchedChain:
    """The certificates a server presented (PEM, leaf first), and whether that is all of them."""

    pem: bytes
    complete: bool
    method: str


def fetch_presented_chain(host: str, port: int, server_name: str, timeout: float = 10.0) -> FetchedChain:
    """Connect with TLS and return the chain the server presents for `server_name` (SNI).

    Verification is off on purpose: the point is to see what is presented, and to judge
    it afterwards by the vehicles' rules. `getpeercert` yields only the leaf, so the full
    chain comes from `SSLSocket.get_unverified_chain()` (Python 3.13+) or the same method
    on the private `_sslobj` (3.10–3.12); without either only the leaf is returned and
    `complete` is False.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    sni = None if ip_literal(server_name) else server_name
    with (
        socket.create_connection((host, port), timeout=timeout) as sock,
        context.wrap_socket(sock, server_hostname=sni) as tls,
    ):
        getter = getattr(tls, "get_unverified_chain", None)
        method = "SSLSocket.get_unverified_chain"
        if getter is None:
            getter = getattr(getattr(tls, "_sslobj", None), "get_unverified_chain", None)
            method = "SSLSocket._sslobj.get_unverified_chain"
        if getter is not None:  # DER bytes (3.13+) or _ssl.Certificate objects (3.10-3.12)
            der = ssl._ssl.ENCODING_DER  # type: ignore[attr-defined]
            ders = [c if isinstance(c, bytes) else c.public_bytes(der) for c in getter() or ()]
            complete = True
        else:
            leaf = tls.getpeercert(binary_form=True)
            ders, complete, method = ([leaf] if leaf else []), False, "getpeercert (leaf only)"
    pem = b"".join(x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM) for d in ders)
    return FetchedChain(pem, complete, method)


def _split_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--connect {value!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def dial_target(config: Mapping[str, Any]) -> tuple[str, int]:
    """Where a vehicle holding `config` connects: its hostname and port (443 when absent).

    A port written as a string of digits is still dialled, so that the report can show
    the string-port failure beside everything else; anything else cannot be dialled.
    """
    port = config.get("port", 443)
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if type(port) is not int or not 0 < port < 65536:
        raise ValueError(f"the config's port {port!r} cannot be dialled; give --connect HOST:PORT")
    return str(config["hostname"]), port


def run(args: argparse.Namespace) -> int:
    """`fleetwire check-cert`: 0 when vehicles should accept the setup, 1 when not, 2 when it cannot check.

    With a config and neither `--cert` nor `--connect`, the server is fetched from the
    config's own `hostname:port`, as Tesla's check_server_cert.sh does.
    """

    def fail(message: str) -> int:
        print(f"fleetwire check-cert: {message}", file=sys.stderr)
        return 2

    config_path = getattr(args, "config_file", None)
    if config_path is not None and args.config is not None:
        return fail("give the config either as CONFIG or as --config, not both")
    config_path = config_path or args.config
    try:
        config: dict[str, Any] = {}
        if config_path is not None:
            document = json.loads(Path(config_path).read_text())
            if not isinstance(document, dict):
                return fail(f"{config_path}: expected a JSON object")
            config = dict(config_of(document))
        if args.hostname is not None:
            config["hostname"] = args.hostname
        if args.ca is not None:
            config["ca"] = Path(args.ca).read_text()
        key_pem = Path(args.key).read_bytes() if args.key is not None else None
        chain_pem = Path(args.cert).read_bytes() if args.cert is not None else b""
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return fail(str(exc))
    hostname = config.get("hostname")
    if not isinstance(hostname, str) or not hostname:
        return fail("no hostname: give a config with a hostname, or --hostname")
    if not isinstance(config.get("ca"), str):
        return fail("no ca: give a config with a ca, or --ca")

    connect = args.connect
    if connect is None and args.cert is None:
        if config_path is None:
            return fail("nothing to check: give a config, --cert or --connect")
        try:
            host, port = dial_target(config)
        except ValueError as exc:
            return fail(str(exc))
        connect = f"{host}:{port}"
    if connect is not None:
        try:
            host, port = _split_host_port(connect)
            fetched = fetch_presented_chain(host, port, hostname)
        except (OSError, ValueError) as exc:
            return fail(f"cannot fetch the chain from {connect}: {exc}")
        print(f"fetched {connect} (SNI {hostname}) with {fetched.method}")
        chain_pem = fetched.pem
        if not fetched.complete:
            print("only the leaf could be read: ca's certificates stand in for the intermediates the server may send")
            chain_pem += config["ca"].encode()

    if config_path is not None:
        report = check_config(config, chain_pem, key_pem=key_pem)
    else:
        report = check_server_certificate(chain_pem, config["ca"].encode(), hostname, key_pem=key_pem)
    print(report.render())
    return 0 if report.ok else 1
