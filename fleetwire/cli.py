"""The `fleetwire` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _setup_logging(level: str = "info", json_logs: bool = False) -> None:
    from fleetwire.server.log_setup import setup_logging

    setup_logging(level, json_logs)


def _serve(args: argparse.Namespace) -> int:
    import uvloop

    from fleetwire.server.app import TelemetryServer
    from fleetwire.server.config import ConfigError, load_config
    from fleetwire.server.worker_count import parse_workers, workers_from_environment

    from fleetwire.server.worker_config import auto_workers

    try:
        requested = parse_workers(args.workers)
        workers = workers_from_environment(requested)
    except ConfigError as exc:
        print(f"fleetwire serve: {exc}", file=sys.stderr)
        return 2
    try:
        config, warnings = load_config(args.config)
    except ConfigError as exc:
        print(f"fleetwire serve: {args.config}: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config.log_level, config.json_log_enable)
    for warning in warnings:
        logging.getLogger("fleetwire.config").warning("%s: %s", args.config, warning)
    if requested is None:
        workers, why = auto_workers(config, workers)
        if why:
            logging.getLogger("fleetwire.server").warning("--workers auto: running 1 worker: %s", why)
    from fleetwire.server.runtime import tune_collector

    tune_collector()
    try:
        if workers > 1:
            from fleetwire.server.supervisor import Supervisor, preflight

            preflight(config, workers)
            return Supervisor(config, workers, log_level=config.log_level, json_logs=config.json_log_enable,
                              stop_timeout=_stop_timeout(args.stop_timeout)).run()
        uvloop.run(TelemetryServer(config).serve_forever())
    except ConfigError as exc:
        print(f"fleetwire serve: {args.config}: {exc}", file=sys.stderr)
        return 2
    return 0


def _stop_timeout(given: float | None) -> float:
    from fleetwire.server.drain import workers_stop_seconds
    from fleetwire.server.environment import read_environment

    return given if given is not None else workers_stop_seconds(read_environment().drain_seconds)


def _demo(args: argparse.Namespace) -> int:
    import uvloop

    from fleetwire.demo.run import run_demo
    from fleetwire.demo.server_only import run_server_demo

    _setup_logging("warning")
    if args.server_only:
        ok = uvloop.run(run_server_demo(vehicles=args.vehicles or 5, seconds=args.seconds, rate=args.rate))
    else:
        ok = uvloop.run(run_demo(vehicles=args.vehicles or 8))
    return 0 if ok else 1


def _simulate(args: argparse.Namespace) -> int:
    import json

    import uvloop

    from fleetwire.sim.fleet import Fleet, issue_vehicle_certs, sim_vin

    async def run() -> dict[str, object]:
        vins = [sim_vin(i) for i in range(args.vehicles)]
        certs = issue_vehicle_certs(args.vehicle_ca_cert, args.vehicle_ca_key, vins, args.cert_dir)
        fleet = Fleet(args.url, args.server_ca, certs, fields=args.fields.split(","))
        connected = await fleet.connect()
        await fleet.stream(rate=args.rate, duration=args.duration, record_types=args.record_types.split(","))
        await fleet.drain(timeout=10)
        await fleet.close()
        return {**fleet.summary().as_dict(), "connected": connected}

    _setup_logging("warning")
    summary = uvloop.run(run())
    print(json.dumps(summary, indent=2))
    return 0 if summary["acked"] == summary["sent"] else 1


def _check_cert(args: argparse.Namespace) -> int:
    from fleetwire.operator.commands.check_cert import run

    return run(args)


def _fleet_api_sim(args: argparse.Namespace) -> int:
    from fleetwire.sim.fleetapi import run_cli

    return run_cli(args)


def _rate(text: str) -> tuple[float, float]:
    burst, sep, per_second = text.partition("/")
    try:
        value = (float(burst), float(per_second))
    except ValueError:
        value = (0.0, 0.0)
    if not sep or min(value) <= 0:
        raise argparse.ArgumentTypeError(f"expected BURST/PER_SECOND, two positive numbers (e.g. 100/50), not {text!r}")
    return value


def _add_fleet_api_sim(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("fleet-api-sim", help="run a local Fleet API simulator whose vehicles stream to your server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="first port: regions na, eu, cn on PORT..PORT+2 (0: free ports)")
    p.add_argument("--vehicles", type=int, default=10)
    p.add_argument("--firmware", default="2025.20.1")
    p.add_argument("--client-id", default="fleetwire-app")
    p.add_argument("--client-secret", help="default: a random one, written to --credentials-out")
    p.add_argument("--public-key", type=Path, help="the app's P-256 key (public or private PEM) that signs configs")
    p.add_argument("--vehicle-ca-cert", type=Path, help="CA that issues the vehicles' client certificates")
    p.add_argument("--vehicle-ca-key", type=Path)
    p.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate chain")
    p.add_argument("--tls-key", type=Path)
    p.add_argument("--resolve", action="append", default=[], metavar="HOST=IP:PORT",
                   help="where vehicles dial for a config's hostname (repeatable)")
    p.add_argument("--max-configs", type=int, default=3, help="config slots per vehicle")
    p.add_argument("--sync-delay", type=float, default=1.0, help="seconds until a pushed config applies")
    p.add_argument("--time-scale", type=float, default=1.0, help="multiplies the configured field intervals")
    p.add_argument("--max-streaming", type=int, help="at most this many vehicles connect")
    p.add_argument("--rate-limit", type=_rate, metavar="BURST/PER_S",
                   help="requests per access token: a bucket of BURST refilled PER_S a second (429 beyond)")
    p.add_argument("--vehicle-rate-limit", type=_rate, metavar="BURST/PER_S",
                   help="requests per vehicle for the calls naming one vehicle, e.g. 10/1 (60 a minute)")
    p.add_argument("--credentials-out", type=Path, default=Path("fleet-api-sim-credentials.json"),
                   help="client secret, user tokens and URLs are written here (mode 0600)")
    p.set_defaults(func=_fleet_api_sim)


def _operator(args: argparse.Namespace) -> int:
    from fleetwire.operator.main import DEFAULT_LIVENESS, DEFAULT_PEERING, OperatorOptions, main

    options = OperatorOptions(
        namespaces=tuple(args.namespace or ()),
        standalone=args.standalone,
        liveness=DEFAULT_LIVENESS if args.liveness is None else args.liveness or None,
        peering=args.peering or DEFAULT_PEERING,
        priority=args.priority,
    )
    return main(options, verbose=args.verbose)


def _add_operator(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("operator", help="run the Kubernetes operator for FleetTelemetryConfig resources")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", metavar="NS", help="serve this namespace (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="serve every namespace (the default)")
    p.add_argument("--standalone", action="store_true", help="no peering with other replicas (run one replica only)")
    p.add_argument("--liveness", metavar="URL", help="liveness endpoint (default http://0.0.0.0:8080/healthz; '' for none)")
    p.add_argument("--peering", help="name of the peering object replicas coordinate through (default fleetwire)")
    p.add_argument("--priority", type=int, help="peering priority; the highest replica works (default: random)")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=_operator)


def _add_vehicles(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def run(args: argparse.Namespace) -> int:
        from fleetwire.operator.commands.vehicles import run as print_vehicles

        return print_vehicles(args)

    p = sub.add_parser("vehicles", help="print the per-vehicle table of a FleetTelemetryConfig (state, reason, "
                                        "last push, last error) and its counts")
    p.add_argument("resource", help="the FleetTelemetryConfig's name")
    p.add_argument("--namespace", "-n", help="its namespace (default: the kubeconfig context's, else default)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument("--output", "-o", choices=("table", "json"), default="table")
    p.add_argument("--wide", action="store_true", help="never cut reasons and errors")
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    from fleetwire.sim.vehicle import DEFAULT_FIELDS

    parser = argparse.ArgumentParser(prog="fleetwire", description="Self-hosted vehicle telemetry streaming.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the mTLS ingest server")
    serve.add_argument("--config", required=True, type=Path, help="config.json (the reference server's format)")
    serve.add_argument("--workers", default="1", metavar="N|auto",
                       help="processes sharing the vehicle port, each with its own event loop (default 1: one "
                            "process); auto: the CPUs this process may use (its cgroup CPU limit, else its "
                            "CPU affinity)")
    serve.add_argument("--stop-timeout", type=float, default=None, metavar="SECONDS",
                       help="with several workers: how long to wait for them after SIGTERM before killing them "
                            "(default: their drain budget, FLEETWIRE_DRAIN_SECONDS, plus 5 s)")
    serve.set_defaults(func=_serve)

    sim = sub.add_parser("simulate", help="stream from simulated vehicles to a server")
    sim.add_argument("--url", required=True, help="wss://HOST:PORT/")
    sim.add_argument("--server-ca", required=True, type=Path, help="the `ca` the vehicles trust (PEM)")
    sim.add_argument("--vehicle-ca-cert", required=True, type=Path, help="CA that issues the vehicles' certificates")
    sim.add_argument("--vehicle-ca-key", required=True, type=Path)
    sim.add_argument("--cert-dir", type=Path, default=Path("sim-certs"), help="where vehicle certificates are kept")
    sim.add_argument("--vehicles", type=int, default=10)
    sim.add_argument("--rate", type=float, default=1.0, help="records per second per vehicle")
    sim.add_argument("--duration", type=float, default=10.0, help="seconds")
    sim.add_argument("--fields", default=",".join(DEFAULT_FIELDS), help="comma-separated Field names")
    sim.add_argument("--record-types", default="V", help="comma-separated, cycled: V,alerts,errors")
    sim.set_defaults(func=_simulate)

    demo = sub.add_parser("demo", help="the whole loop on loopback: emulated cluster, operator, Fleet API "
                                       "simulator, server, vehicles, and a CA rotation healed without a human")
    demo.add_argument("--server-only", action="store_true",
                      help="the quick demo of the ingest server alone (records from vehicles, an impostor refused)")
    demo.add_argument("--vehicles", type=int, help="vehicles that stream (default 8; 5 with --server-only)")
    demo.add_argument("--seconds", type=float, default=4.0, help="--server-only: seconds of streaming")
    demo.add_argument("--rate", type=float, default=2.0, help="--server-only: records per second per vehicle")
    demo.set_defaults(func=_demo)

    check = sub.add_parser(
        "check-cert",
        help="check a server certificate and a config's ca as a vehicle would",
        description="Exit status: 0 vehicles should accept it, 1 a check failed, 2 nothing could be checked.",
    )
    check.add_argument("config_file", nargs="?", type=Path, metavar="CONFIG",
                       help="vehicle telemetry config JSON (hostname, port, ca); alone, its hostname:port is checked")
    check.add_argument("--config", type=Path, help="the same as CONFIG")
    check.add_argument("--hostname", help="the name vehicles connect to (overrides the config's)")
    check.add_argument("--ca", type=Path, help="the ca vehicles trust, PEM (overrides the config's)")
    source = check.add_mutually_exclusive_group()
    source.add_argument("--cert", type=Path, help="the server's chain, PEM, leaf first (instead of connecting)")
    source.add_argument("--connect", metavar="HOST:PORT",
                        help="fetch the chain a live TLS server presents (default: the config's hostname:port)")
    check.add_argument("--key", type=Path, help="the server's private key, PEM, to match against the leaf")
    check.set_defaults(func=_check_cert)

    _add_fleet_api_sim(sub)

    _add_operator(sub)

    _add_vehicles(sub)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=lambda _args: print(__import__("fleetwire").__version__) or 0)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
