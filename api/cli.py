"""``wasup``: the command line. ``wasup serve`` runs the gateway; the other commands talk to a
running one (:mod:`api.cli_devices`: ``devices``, ``qr``, ``events``) or check the machine
(:mod:`api.cli_doctor`: ``doctor``)::

    wasup serve [options below]
    wasup devices list|show|create|delete|login|logout|cancel ...
    wasup qr DEVICE            draws the QR code in the terminal until the device connects
    wasup events [--device D] [--type T]
    wasup doctor               checks this machine before a first pairing

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
    return parser


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
    args = build_parser(env).parse_args(arguments)
    if args.command == "doctor":
        return cli_doctor.run(args)
    if args.command != "serve":
        return cli_devices.run(args, env)
    return cli_serve.run(parse_options(arguments, env), argv, env)


if __name__ == "__main__":
    raise SystemExit(main())
