"""``wasup``: the command line. ``wasup serve`` runs the gateway; the other commands talk to a
running one (:mod:`api.cli_devices`: ``devices``, ``qr``, ``events``) or check the machine
(:mod:`api.cli_doctor`: ``doctor``)::

    wasup serve [options below]
    wasup devices list|show|create|delete|login|logout|cancel ...
    wasup qr DEVICE            draws the QR code in the terminal until the device connects
    wasup events [--device D] [--type T]
    wasup doctor               checks this machine before a first pairing
    wasup simulator serve --port N [--host H] [--seed S] [--latency L]
                               a simulated WhatsApp shared by several nodes (docs/simulator.md)

``wasup serve``'s options, token and start-up are in :mod:`api.cli_serve`; this module builds
the one parser and dispatches. Every flag of every command has help text.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from api import cli_devices, cli_doctor, cli_serve
from api.cli_serve import TOKEN_FILE as TOKEN_FILE
from api.cli_serve import ServeOptions as ServeOptions
from api.cli_serve import api_settings as api_settings
from api.cli_serve import load_or_create_token as load_or_create_token
from api.cli_serve import serve_config as serve_config


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The ``wasup`` parser with every command (defaults from ``env``)."""
    parser = argparse.ArgumentParser(
        prog="wasup", description="Self-hosted WhatsApp gateway (HTTP + WebSocket)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cli_serve.add_parser(sub, env)
    cli_devices.add_parsers(sub)
    cli_doctor.add_parser(sub, env)
    _add_simulator(sub)
    return parser


def _add_simulator(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    simulator = sub.add_parser("simulator", help="the simulated WhatsApp as its own process")
    actions = simulator.add_subparsers(dest="simulator_command", required=True)
    serve = actions.add_parser(
        "serve", help="serve a simulated WhatsApp that several wasup nodes share "
        "(wasup serve --engine simulator --simulator-url http://HOST:PORT)")
    serve.add_argument("--port", type=int, required=True, help="the port to listen on")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on "
                       "(default 127.0.0.1)")
    serve.add_argument("--seed", type=int, default=0,
                       help="seed of the simulated values: QR codes, numbers, ids (default 0)")
    serve.add_argument("--latency", type=float, default=0.5,
                       help="seconds each pairing or login handshake takes (default 0.5)")
    serve.add_argument("--log-level", default="info", help="debug, info, warning or error "
                       "(default info)")


def _run_simulator(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``wasup simulator serve``: until SIGINT or SIGTERM."""
    import trio

    from api.logging import configure
    from supervisor.engines.simulator_service import run_service

    if not 0 <= args.port <= 65535:
        parser.error("port must be between 0 and 65535")
    if not (0 <= args.latency <= 60):
        parser.error("latency must be between 0 and 60 seconds")
    configure(args.log_level)
    try:
        trio.run(run_service, args.host, args.port, args.seed, args.latency)
    except OSError as exc:
        print(f"wasup simulator: {exc}", file=sys.stderr)
        return 1
    return 0


def parse_options(argv: Sequence[str], env: Mapping[str, str]) -> ServeOptions:
    """``wasup serve``'s options from ``argv`` and ``env``; exits with status 2 and a message
    when invalid (or when ``argv`` is another command)."""
    parser = build_parser(env)
    args = parser.parse_args(list(argv))
    if args.command != "serve":
        parser.error(f"{args.command} is not serve")
    return cli_serve.options_from(args, parser, env)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Entry point of the ``wasup`` console script; returns the exit status."""
    env = os.environ if env is None else env
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(env)
    args = parser.parse_args(arguments)
    if args.command == "simulator":
        return _run_simulator(args, parser)
    if args.command == "doctor":
        return cli_doctor.run(args)
    if args.command != "serve":
        return cli_devices.run(args, env)
    return cli_serve.run(parse_options(arguments, env), argv, env)


if __name__ == "__main__":
    raise SystemExit(main())
