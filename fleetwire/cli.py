"""The `fleetwire` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _setup_logging(level: str = "info", json_logs: bool = False) -> None:
    fmt = (
        '{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}'
        if json_logs
        else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=fmt, stream=sys.stderr)


def _serve(args: argparse.Namespace) -> int:
    import uvloop

    from fleetwire.server.app import TelemetryServer
    from fleetwire.server.config import ConfigError, load_config

    try:
        config, warnings = load_config(args.config)
    except ConfigError as exc:
        print(f"fleetwire serve: {args.config}: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config.log_level, config.json_log_enable)
    for warning in warnings:
        logging.getLogger("fleetwire.config").warning("%s: %s", args.config, warning)
    try:
        uvloop.run(TelemetryServer(config).serve_forever())
    except ConfigError as exc:
        print(f"fleetwire serve: {args.config}: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleetwire", description="Self-hosted vehicle telemetry streaming.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the mTLS ingest server")
    serve.add_argument("--config", required=True, type=Path, help="config.json (the reference server's format)")
    serve.set_defaults(func=_serve)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=lambda _args: print(__import__("fleetwire").__version__) or 0)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
