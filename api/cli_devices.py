"""``wasup devices …``, ``wasup qr`` and ``wasup events``: the command line of a running wasup.

Usage::

    wasup devices list [--user USER] [--status STATUS]
    wasup devices show DEVICE
    wasup devices create --user USER --alias ALIAS [--phone-number N] [--business-type T]
                         [--description D]
    wasup devices delete DEVICE [--yes]
    wasup devices login|logout|cancel DEVICE
    wasup qr DEVICE [--timeout SECONDS] [--invert]
    wasup events [--device DEVICE]... [--type TYPE]... [--count N]

Every command takes ``--url``, ``--token`` and ``--data-dir`` (:mod:`api.cli_client`).
``DEVICE`` is a sessionId or a numeric id. ``qr`` draws the QR code in the terminal (qrcode's
text output) and draws it again on each rotation, from the WebSocket event stream, until the
device connects (exit 0) or pairing ends or ``--timeout`` passes (exit 1). ``events`` prints
each event as one JSON line until interrupted (or ``--count`` events).

Error handling: a refused request or an unreachable server prints one line (``wasup: 404
DEVICE_NOT_FOUND: ...``) and exits 1; see :func:`run`.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO
from urllib.parse import quote

import qrcode
import trio
import trio_websocket

from api.cli_client import CliError, Target, add_target_flags, call, event_stream, resolve_target
from supervisor.payloads import EVENT_TYPES
from supervisor.status import Status

#: Seconds ``wasup qr`` waits for the device to connect, by default.
QR_TIMEOUT = 300.0
#: Events ``wasup qr`` follows.
QR_EVENTS = ("qr_code", "qr_timeout", "device_status")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``devices``, ``qr`` and ``events`` to the ``wasup`` parser's subcommands."""
    devices = sub.add_parser("devices", help="list, show, create, delete and log devices in")
    actions = devices.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="list devices (of a user, or every live session)")
    add_target_flags(listing)
    listing.add_argument("--user", default=None,
                         help="the user whose devices to list (default: every device)")
    listing.add_argument("--status", choices=[s.value for s in Status], default=None,
                         help="only devices in this status")

    for name, text in (("show", "show a device with its connection and statistics"),
                       ("login", "log a device in (pairs anew when it has no credentials)"),
                       ("logout", "log a device out at WhatsApp and wipe its credentials"),
                       ("cancel", "stop a device's session without logging out")):
        parser = actions.add_parser(name, help=text)
        add_target_flags(parser)
        parser.add_argument("device", help="the device's sessionId or numeric id")

    create = actions.add_parser("create", help="create a device and start pairing")
    add_target_flags(create)
    create.add_argument("--user", required=True, help="the user the device belongs to")
    create.add_argument("--alias", required=True, help="the device's name within its user")
    create.add_argument("--phone-number", default=None, help="the account's phone number")
    create.add_argument("--business-type", default=None, help="what the business does")
    create.add_argument("--description", default=None, help="a note about the device")

    delete = actions.add_parser("delete", help="delete a device, its session and its data")
    add_target_flags(delete)
    delete.add_argument("device", help="the device's sessionId or numeric id")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    qr = sub.add_parser("qr", help="draw a device's QR code in the terminal until it connects")
    add_target_flags(qr)
    qr.add_argument("device", help="the device's sessionId or numeric id")
    qr.add_argument("--timeout", type=float, default=QR_TIMEOUT,
                    help=f"seconds to wait for the device to connect (default {QR_TIMEOUT:g})")
    qr.add_argument("--invert", action="store_true",
                    help="swap dark and light: for a terminal with light text on a dark "
                    "background, if the phone does not read the code")

    events = sub.add_parser("events", help="print events as JSON lines as they happen")
    add_target_flags(events)
    events.add_argument("--device", action="append", default=[],
                        help="only this device's events (sessionId or id; repeatable)")
    events.add_argument("--type", action="append", default=[], choices=sorted(EVENT_TYPES),
                        metavar="TYPE",
                        help="only events of this type (repeatable): "
                        + ", ".join(sorted(EVENT_TYPES)))
    events.add_argument("--count", type=int, default=None,
                        help="exit after this many events (default: until interrupted)")


def render_qr(text: str, *, invert: bool = False) -> str:
    """``text`` as a QR code drawn with block characters (two rows of modules per line)."""
    code = qrcode.QRCode(border=2)
    code.add_data(text)
    out = io.StringIO()
    code.print_ascii(out=out, invert=invert)
    return out.getvalue()


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


async def _list(target: Target, args: argparse.Namespace, out: TextIO) -> int:
    params = ({"userId": args.user} if args.user is not None else {}) | (
        {"status": args.status} if args.status else {})
    rows = []
    page = 1
    while True:
        found = await call(target, "GET", "/devices", params=params | {"limit": "100",
                                                                     "page": str(page)})
        rows += found
        if len(found) < 100:
            break
        page += 1
    print(f"{'ID':>5}  {'STATUS':<13} {'REASON':<20} SESSION", file=out)
    for row in rows:
        print(f"{row['id']:>5}  {row['status']:<13} {row['statusReason'] or '-':<20} "
              f"{row['sessionId']}", file=out)
    return 0


async def _create(target: Target, args: argparse.Namespace, out: TextIO) -> int:
    body = {"userId": args.user, "alias": args.alias, "phoneNumber": args.phone_number,
            "businessType": args.business_type, "description": args.description}
    data = await call(target, "POST", "/devices", {k: v for k, v in body.items() if v is not None})
    data.pop("qrCode", None)  # a PNG data URL: `wasup qr` draws it in the terminal
    print(_json(data), file=out)
    print(f"\nThe API key is shown only now. Pair it with: wasup qr {data['sessionId']}", file=out)
    return 0


async def _delete(target: Target, args: argparse.Namespace, out: TextIO) -> int:
    if not args.yes:
        question = f"delete {args.device} and everything stored for it? [y/N] "
        answer = await trio.to_thread.run_sync(input, question)
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted", file=out)
            return 1
    await call(target, "DELETE", f"/devices/{quote(args.device, safe='')}")
    print(f"deleted {args.device}", file=out)
    return 0


#: The one-device actions: method and path (``{}``: the device).
ACTIONS: Mapping[str, tuple[str, str]] = {
    "show": ("GET", "/devices/{}"),
    "login": ("POST", "/devices/{}/login"),
    "logout": ("POST", "/devices/{}/logout"),
    "cancel": ("POST", "/sessions/{}/cancel"),
}


async def _simple(target: Target, args: argparse.Namespace, out: TextIO) -> int:
    method, path = ACTIONS[args.action]
    data = await call(target, method, path.format(quote(args.device, safe="")))
    if isinstance(data, dict):
        data.pop("qrCode", None)  # a PNG data URL: `wasup qr` draws it in the terminal
    print(_json(data), file=out)
    return 0


def _draw(out: TextIO, qr: Mapping[str, Any], invert: bool) -> None:
    print(render_qr(str(qr["qrString"]), invert=invert), file=out)
    print(f"QR code {qr['attempt']}/{qr['maxAttempts']}, expires at {qr['expiresAt']}: scan it "
          "in WhatsApp (Settings > Linked devices > Link a device)", file=out, flush=True)


async def _qr(target: Target, args: argparse.Namespace, out: TextIO) -> int:
    with trio.move_on_after(args.timeout):
        async with event_stream(target, devices=[args.device], types=QR_EVENTS) as ws:
            # Subscribed first, so no rotation between the first code and the stream is lost.
            device = await call(target, "GET", f"/devices/{quote(args.device, safe='')}")
            if device["status"] == Status.CONNECTED:
                print(f"{device['sessionId']} is connected", file=out)
                return 0
            if device["status"] != Status.PENDING:
                print(f"{device['sessionId']} is {device['status']}, not pairing: start a "
                      f"login with `wasup devices login {device['sessionId']}`", file=out)
                return 1
            try:
                _draw(out, await call(target, "GET", f"/devices/{quote(args.device, safe='')}/qr"), args.invert)
            except CliError as exc:  # not ready yet: the qr_code event brings it
                if "DEVICE_CONFLICT" not in str(exc):
                    raise
            while True:
                try:
                    event = json.loads(await ws.get_message())
                except trio_websocket.ConnectionClosed:
                    raise CliError("the event stream closed") from None
                kind, data = event.get("type"), event.get("data") or {}
                if kind == "qr_code":
                    _draw(out, data, args.invert)
                elif kind == "qr_timeout":
                    print("pairing timed out: no scan", file=out)
                    return 1
                elif kind == "device_status" and data.get("to") == Status.CONNECTED:
                    print(f"{device['sessionId']} is connected", file=out)
                    return 0
                elif kind == "device_status" and data.get("to") not in (
                    Status.PENDING, Status.CONNECTING
                ):
                    print(f"pairing ended: {data.get('to')} ({data.get('reason')})", file=out)
                    return 1
    print(f"no connection within {args.timeout:g} s", file=out)
    return 1


async def _events(target: Target, args: argparse.Namespace, out: TextIO) -> int:
    seen = 0
    async with event_stream(target, devices=args.device, types=args.type) as ws:
        while args.count is None or seen < args.count:
            try:
                message = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                raise CliError(f"the event stream closed: {exc.reason}") from None
            print(message if isinstance(message, str) else message.decode(), file=out, flush=True)
            seen += 1
    return 0


Command = Callable[[Target, argparse.Namespace, TextIO], Any]


def _command(args: argparse.Namespace) -> Command:
    if args.command == "qr":
        return _qr
    if args.command == "events":
        return _events
    return {"list": _list, "create": _create, "delete": _delete}.get(args.action, _simple)


async def execute(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    """Run a parsed ``devices``, ``qr`` or ``events`` command in the current Trio run; its
    exit status.

    Raises: CliError (see :mod:`api.cli_client`).
    """
    target = resolve_target(args, env)
    status: int = await _command(args)(target, args, out)
    return status


def run(args: argparse.Namespace, env: Mapping[str, str], out: TextIO | None = None) -> int:
    """Run a parsed ``devices``, ``qr`` or ``events`` command; its exit status.

    Error handling: a CliError prints ``wasup: <what>`` to stderr and answers 1; Ctrl-C 130.
    """
    try:
        return trio.run(execute, args, env, sys.stdout if out is None else out)
    except CliError as exc:
        print(f"wasup: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
