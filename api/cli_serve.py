"""``wasup serve``: the gateway's options, its operator token and its start and shutdown.

Each option has an environment variable (the flag wins over the variable)::

    --host                   WASUP_HOST                   127.0.0.1
    --port                   WASUP_PORT                   3001
    --data-dir               WASUP_DATA_DIR               ./data
    --database               WASUP_DATABASE_URL           (none: SQLite in the data directory)
    --engine                 WASUP_ENGINE                 whatsmeow  (or simulator)
    --simulator-url          WASUP_SIMULATOR_URL          (none: the simulator runs in process)
    --max-concurrent-logins  WASUP_MAX_CONCURRENT_LOGINS  5
    --rate-limit             WASUP_RATE_LIMIT             50   requests/second per credential
    --rate-burst             WASUP_RATE_BURST             100
    --qr-wait                WASUP_QR_WAIT                2    seconds POST /devices waits for a QR
    --log-level              WASUP_LOG_LEVEL              info
    --log-format             WASUP_LOG_FORMAT             text (or json: one object per line)
    --metrics-device-labels  WASUP_METRICS_DEVICE_LABELS  off  /metrics shows each device's status
    --ws-ping-interval       WASUP_WS_PING_INTERVAL       25   seconds between keep-alive pings (0: none)
    --ws-send-timeout        WASUP_WS_SEND_TIMEOUT        30   seconds a stalled send may take (0: no limit)
    --ws-max-per-credential  WASUP_WS_MAX_PER_CREDENTIAL  64   open WebSocket connections per credential
    --ws-queue-size          WASUP_WS_QUEUE_SIZE          256  events buffered per WebSocket connection
    --message-retention-days   WASUP_MESSAGE_RETENTION_DAYS   90      days messages are kept (0: no limit)
    --message-retention-count  WASUP_MESSAGE_RETENTION_COUNT  100000  messages kept per device (0: no limit)
    --media-cache-bytes      WASUP_MEDIA_CACHE_BYTES      1073741824  bytes of cached media files
    --media-max-image        WASUP_MEDIA_MAX_IMAGE        16777216    largest image sent (bytes)
    --media-max-video        WASUP_MEDIA_MAX_VIDEO        67108864    largest video sent
    --media-max-audio        WASUP_MEDIA_MAX_AUDIO        16777216    largest audio or voice note sent
    --media-max-document     WASUP_MEDIA_MAX_DOCUMENT     104857600   largest document sent
    --media-max-sticker      WASUP_MEDIA_MAX_STICKER      1048576     largest sticker sent
    --media-url-timeout      WASUP_MEDIA_URL_TIMEOUT      30          seconds fetching a media URL may take
    --media-download-timeout WASUP_MEDIA_DOWNLOAD_TIMEOUT 120         seconds a download from WhatsApp may take
    --node-id, --advertise-url, --cluster-secret, --capacity, --lease-…: a cluster node
                             (api/cli_cluster.py; WASUP_NODE_ID, … ; docs/cluster.md)
                             WASUP_API_TOKEN              operator token (see below)
                             WASUP_WEBHOOK_ALLOW_NETWORKS comma-separated CIDRs

The operator token comes from ``WASUP_API_TOKEN``. When that is unset, the first start
generates one, stores it in ``<data-dir>/api_token`` (mode 0600) and prints it once; later
starts read it from there and print only where it is.

Before serving (:mod:`api.startup`): with the whatsmeow engine, ``NEONIZE_BOT_TAG=off`` is put
in the environment the process starts with (it re-executes itself when the variable is missing;
an operator's own value is kept, with a warning unless it is off), and a missing libmagic is
reported in one line with exit status 2; with any engine, the soft limit on open files is
raised to the hard limit.

SIGINT or SIGTERM start a graceful shutdown (requests in flight finish, actors stop newest
first, the database closes); anything left after ``SHUTDOWN_DEADLINE`` seconds is cancelled.
A second signal cancels at once. A cluster node whose ``--node-id`` another process took over
(started with the same id) stops its engines and exits with status 1.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import secrets
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs
import trio

from api import cli_cluster, startup
from api.cli_client import TOKEN_FILE
from api.logging import LOG_FORMATS, configure
from api.ratelimit import RateLimitPolicy
from api.server import serve
from api.state import ApiSettings, WsSettings
from supervisor.cluster.leases import NodeIdTaken
from supervisor.config import ClusterConfig, Config, ContactsConfig, MediaConfig
from supervisor.runtime import tune_gc

log = logging.getLogger("wasup.cli")

SHUTDOWN_DEADLINE = 15.0
ENGINES = ("whatsmeow", "simulator")
#: What a `--database` URL may start with (PostgreSQL's own two spellings).
DATABASE_SCHEMES = ("postgresql://", "postgres://")
WS_DEFAULTS = WsSettings()
CONFIG_DEFAULTS = Config()
#: MediaConfig's fields, each an option ``--media-<field>``, and their environment variables.
MEDIA_FIELDS = attrs.fields(MediaConfig)
MEDIA_ENV = {
    "cache_bytes": "WASUP_MEDIA_CACHE_BYTES",
    "max_image": "WASUP_MEDIA_MAX_IMAGE",
    "max_video": "WASUP_MEDIA_MAX_VIDEO",
    "max_audio": "WASUP_MEDIA_MAX_AUDIO",
    "max_document": "WASUP_MEDIA_MAX_DOCUMENT",
    "max_sticker": "WASUP_MEDIA_MAX_STICKER",
    "url_timeout": "WASUP_MEDIA_URL_TIMEOUT",
    "download_timeout": "WASUP_MEDIA_DOWNLOAD_TIMEOUT",
}
#: ContactsConfig's fields, each an option ``--contacts-<field>``, and their environment variables.
CONTACTS_FIELDS = attrs.fields(ContactsConfig)
CONTACTS_ENV = {
    "check_cache_seconds": "WASUP_CONTACTS_CHECK_CACHE_SECONDS",
    "checks_per_hour": "WASUP_CONTACTS_CHECKS_PER_HOUR",
    "check_batch_max": "WASUP_CONTACTS_CHECK_BATCH_MAX",
}
CONTACTS_HELP = {
    "check_cache_seconds": "seconds a number's contact check is answered from the cache (0: never)",
    "checks_per_hour": "numbers one device may ask whatsapp about per hour (cache hits are free)",
    "check_batch_max": "the most phone numbers one contact check may hold",
}


@attrs.frozen
class ServeOptions:
    host: str
    port: int
    data_dir: Path
    engine: str
    max_concurrent_logins: int
    rate_limit: float
    rate_burst: int
    qr_wait: float
    log_level: str
    webhook_allow_networks: tuple[str, ...]
    log_format: str = "text"
    ws_ping_interval: float = WS_DEFAULTS.ping_interval
    ws_send_timeout: float = WS_DEFAULTS.send_timeout
    ws_max_per_credential: int = WS_DEFAULTS.max_per_credential
    ws_queue_size: int | None = None  # None: the event bus's (Config.event_queue_size)
    message_retention_days: int = CONFIG_DEFAULTS.message_retention_days
    message_retention_count: int = CONFIG_DEFAULTS.message_retention_count
    event_retention_days: int = CONFIG_DEFAULTS.event_retention_days
    media: MediaConfig = CONFIG_DEFAULTS.media
    contacts: ContactsConfig = CONFIG_DEFAULTS.contacts
    metrics_device_labels: bool = False
    database_url: str | None = None
    simulator_url: str | None = None  # a shared simulator (wasup simulator serve)
    cluster: ClusterConfig | None = None


def _env(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name)
    return default if value is None or value == "" else value


def _media_help(name: str, default: object) -> str:
    """The help text of a ``--media-…`` flag (a field of :class:`MediaConfig`)."""
    if name == "cache_bytes":
        return f"bytes of media files kept in the cache (default {default})"
    if name == "url_timeout":
        return f"seconds fetching a send's media url may take (default {default})"
    if name == "download_timeout":
        return f"seconds downloading a message's file from whatsapp may take (default {default})"
    return f"the largest {name.removeprefix('max_')} a send takes, in bytes (default {default})"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Mapping[str, str]) -> None:
    """Add ``serve`` and its options (defaults from ``env``) to ``wasup``'s subcommands."""
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", default=_env(env, "WASUP_HOST", "127.0.0.1"),
                       help="the address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=_env(env, "WASUP_PORT", "3001"),
                       help="the port of the HTTP API and the WebSocket (default 3001)")
    serve.add_argument("--data-dir", type=Path, default=_env(env, "WASUP_DATA_DIR", "./data"),
                       help="where the database, credentials and token live (default ./data)")
    serve.add_argument(
        "--database", dest="database_url", default=env.get("WASUP_DATABASE_URL") or None,
        help="keep wasup's data in PostgreSQL at this postgresql:// URL (default: SQLite, "
        "wasup.db in the data directory)",
    )
    serve.add_argument(
        "--engine", choices=ENGINES, default=_env(env, "WASUP_ENGINE", "whatsmeow"),
        help="whatsmeow (real WhatsApp through neonize) or simulator (default whatsmeow)",
    )
    serve.add_argument(
        "--simulator-url", default=env.get("WASUP_SIMULATOR_URL") or None,
        help="with --engine simulator: use the shared simulator (wasup simulator serve) at "
        "this http:// URL instead of one in process",
    )
    serve.add_argument(
        "--max-concurrent-logins",
        type=int,
        default=_env(env, "WASUP_MAX_CONCURRENT_LOGINS", "5"),
        help="login handshakes at once, over every device (default 5)",
    )
    serve.add_argument("--rate-limit", type=float, default=_env(env, "WASUP_RATE_LIMIT", "50"),
                       help="requests per second per credential, on average (default 50)")
    serve.add_argument("--rate-burst", type=int, default=_env(env, "WASUP_RATE_BURST", "100"),
                       help="requests a credential may make back to back (default 100)")
    serve.add_argument("--qr-wait", type=float, default=_env(env, "WASUP_QR_WAIT", "2"),
                       help="seconds POST /devices and login wait for the first QR code "
                       "(default 2)")
    serve.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=_env(env, "WASUP_LOG_LEVEL", "info").lower(),
        help="the least severe level logged (default info)",
    )
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=_env(env, "WASUP_LOG_FORMAT", "text").lower(),
        help="text lines, or json: one object per line with time, level, device, event and "
        "reason (default text)",
    )
    serve.add_argument(
        "--ws-ping-interval",
        type=float,
        default=_env(env, "WASUP_WS_PING_INTERVAL", f"{WS_DEFAULTS.ping_interval:g}"),
        help="seconds between WebSocket keep-alive pings (0: none; default 25)",
    )
    serve.add_argument(
        "--ws-send-timeout",
        type=float,
        default=_env(env, "WASUP_WS_SEND_TIMEOUT", f"{WS_DEFAULTS.send_timeout:g}"),
        help="seconds a stalled WebSocket send may take before the connection is aborted "
        "(0: no limit; default 30)",
    )
    serve.add_argument(
        "--ws-max-per-credential",
        type=int,
        default=_env(env, "WASUP_WS_MAX_PER_CREDENTIAL", str(WS_DEFAULTS.max_per_credential)),
        help="open WebSocket connections per credential (default 64)",
    )
    # No default of its own: unset, the event bus's (Config.event_queue_size) applies.
    serve.add_argument("--ws-queue-size", type=int, default=env.get("WASUP_WS_QUEUE_SIZE") or None,
                       help="events buffered per WebSocket connection before a slow one is "
                       "closed (default: the event bus's, 256)")
    serve.add_argument(
        "--message-retention-days",
        type=int,
        default=_env(env, "WASUP_MESSAGE_RETENTION_DAYS", str(CONFIG_DEFAULTS.message_retention_days)),
        help="days stored messages are kept (0: no age limit)",
    )
    serve.add_argument(
        "--message-retention-count",
        type=int,
        default=_env(env, "WASUP_MESSAGE_RETENTION_COUNT", str(CONFIG_DEFAULTS.message_retention_count)),
        help="messages kept per device, the newest (0: no count limit)",
    )
    serve.add_argument(
        "--event-retention-days",
        type=int,
        default=_env(env, "WASUP_EVENT_RETENTION_DAYS", str(CONFIG_DEFAULTS.event_retention_days)),
        help="days events are kept in the event log (0: no age limit)",
    )
    serve.add_argument(
        "--metrics-device-labels", action="store_true",
        default=_env(env, "WASUP_METRICS_DEVICE_LABELS", "").lower() in ("1", "true", "yes", "on"),
        help="also show each device's status in /metrics, labelled with its sessionId (one "
        "series per device: off by default)",
    )
    for field in MEDIA_FIELDS:
        serve.add_argument(
            "--media-" + field.name.replace("_", "-"),
            dest="media_" + field.name,
            type=type(field.default),  # int, or float for the timeouts
            default=_env(env, MEDIA_ENV[field.name], str(field.default)),
            help=_media_help(field.name, field.default),
        )
    for field in CONTACTS_FIELDS:
        serve.add_argument(
            "--contacts-" + field.name.replace("_", "-"),
            dest="contacts_" + field.name,
            type=type(field.default),  # float for the cache's seconds, else int
            default=_env(env, CONTACTS_ENV[field.name], str(field.default)),
            help=f"{CONTACTS_HELP[field.name]} (default {field.default})",
        )
    cli_cluster.add_arguments(serve, env)


def options_from(
    args: argparse.Namespace, parser: argparse.ArgumentParser, env: Mapping[str, str]
) -> ServeOptions:
    """``serve``'s parsed ``args`` checked and gathered; ``parser.error`` (exit status 2 with a
    message) when one is invalid."""
    # argparse applies `type` to string defaults too, so env values are converted (or refused).
    if args.engine not in ENGINES:
        parser.error(f"WASUP_ENGINE must be one of {', '.join(ENGINES)}")
    if not 0 <= args.port <= 65535:
        parser.error("port must be between 0 and 65535")
    if args.max_concurrent_logins < 1:
        parser.error("max-concurrent-logins must be at least 1")
    if args.rate_limit <= 0 or args.rate_burst < 1:
        parser.error("rate-limit must be positive and rate-burst at least 1")
    if not 0 <= args.qr_wait <= 60:
        parser.error("qr-wait must be between 0 and 60 seconds")
    if not (math.isfinite(args.ws_ping_interval) and args.ws_ping_interval >= 0):
        parser.error("ws-ping-interval must be 0 (no pings) or a positive number of seconds")
    if not (math.isfinite(args.ws_send_timeout) and args.ws_send_timeout >= 0):
        parser.error("ws-send-timeout must be 0 (no limit) or a positive number of seconds")
    if args.ws_max_per_credential < 1:
        parser.error("ws-max-per-credential must be at least 1")
    if args.ws_queue_size is not None and args.ws_queue_size < 1:
        parser.error("ws-queue-size must be at least 1")
    if args.log_format not in LOG_FORMATS:
        parser.error(f"WASUP_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
    if args.message_retention_days < 0 or args.message_retention_count < 0:
        parser.error("message-retention-days and -count must be 0 (no limit) or more")
    if args.event_retention_days < 0:
        parser.error("event-retention-days must be 0 (no limit) or more")
    if args.database_url is not None and not args.database_url.startswith(DATABASE_SCHEMES):
        parser.error("database must be a postgresql:// URL")
    if args.simulator_url is not None and (
        args.engine != "simulator" or not args.simulator_url.startswith(("http://", "https://"))
    ):
        parser.error("simulator-url must be an http:// URL, with --engine simulator")
    media = MediaConfig(**{f.name: getattr(args, "media_" + f.name) for f in MEDIA_FIELDS})
    for field in MEDIA_FIELDS:
        value = getattr(media, field.name)
        if not (math.isfinite(value) and value > 0):
            parser.error(f"media-{field.name.replace('_', '-')} must be a positive number")
    contacts = ContactsConfig(
        **{f.name: getattr(args, "contacts_" + f.name) for f in CONTACTS_FIELDS}
    )
    if not (math.isfinite(contacts.check_cache_seconds) and contacts.check_cache_seconds >= 0):
        parser.error("contacts-check-cache-seconds must be 0 (no cache) or more")
    if contacts.checks_per_hour < 1 or contacts.check_batch_max < 1:
        parser.error("contacts-checks-per-hour and contacts-check-batch-max must be at least 1")
    networks = tuple(
        part.strip()
        for part in env.get("WASUP_WEBHOOK_ALLOW_NETWORKS", "").split(",")
        if part.strip()
    )
    return ServeOptions(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        engine=args.engine,
        max_concurrent_logins=args.max_concurrent_logins,
        rate_limit=args.rate_limit,
        rate_burst=args.rate_burst,
        qr_wait=args.qr_wait,
        log_level=args.log_level,
        log_format=args.log_format,
        webhook_allow_networks=networks,
        ws_ping_interval=args.ws_ping_interval,
        ws_send_timeout=args.ws_send_timeout,
        ws_max_per_credential=args.ws_max_per_credential,
        ws_queue_size=args.ws_queue_size,
        message_retention_days=args.message_retention_days,
        message_retention_count=args.message_retention_count,
        event_retention_days=args.event_retention_days,
        media=media,
        contacts=contacts,
        metrics_device_labels=args.metrics_device_labels,
        database_url=args.database_url,
        simulator_url=args.simulator_url,
        cluster=cli_cluster.cluster_from(args, parser),
    )


def api_settings(options: ServeOptions) -> ApiSettings:
    """The HTTP and WebSocket layers' settings from the command line's ``options``."""
    return ApiSettings(
        rate_limit=RateLimitPolicy(rate=options.rate_limit, burst=options.rate_burst),
        qr_wait=options.qr_wait,
        ws=WsSettings(
            queue_size=options.ws_queue_size,
            send_timeout=options.ws_send_timeout,
            ping_interval=options.ws_ping_interval,
            max_per_credential=options.ws_max_per_credential,
        ),
        metrics_device_labels=options.metrics_device_labels,
    )


def load_or_create_token(data_dir: Path, env: Mapping[str, str]) -> tuple[str, bool]:
    """The operator token and whether it was generated just now.

    ``WASUP_API_TOKEN`` wins. Otherwise ``<data_dir>/api_token`` is read, or created with
    mode 0600 (exclusively, so two first starts cannot both write one); a data directory
    created here is mode 0700, as everywhere else wasup creates it. Raises OSError when
    the data directory cannot be created or the file cannot be read or written.
    """
    token = env.get("WASUP_API_TOKEN", "").strip()
    if token:
        return token, False
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        stored = path.read_text(encoding="utf-8").strip()
        if not stored:
            raise OSError(f"{path} is empty: delete it to generate a new token") from None
        return stored, False
    token = "wasup_" + secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    return token, True


def serve_config(options: ServeOptions) -> Config:
    """The supervisor's configuration from the command line's ``options``."""
    return Config(
        data_dir=options.data_dir,
        database_url=options.database_url,
        engine=options.engine,
        simulator_url=options.simulator_url,
        max_concurrent_logins=options.max_concurrent_logins,
        allow_networks=options.webhook_allow_networks,
        message_retention_days=options.message_retention_days,
        message_retention_count=options.message_retention_count,
        event_retention_days=options.event_retention_days,
        media=options.media,
        contacts=options.contacts,
        cluster=options.cluster,
    )


async def run_server(options: ServeOptions, token: str) -> None:
    """Serve until SIGINT/SIGTERM, then shut down gracefully within SHUTDOWN_DEADLINE."""
    config = serve_config(options)
    settings = api_settings(options)
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    if not stop.is_set():
                        log.info(
                            "%s received: shutting down (deadline %g s)",
                            signal.Signals(signum).name,
                            SHUTDOWN_DEADLINE,
                        )
                        stop.set()
                        nursery.cancel_scope.deadline = trio.current_time() + SHUTDOWN_DEADLINE
                    else:
                        log.warning("second signal: stopping now")
                        nursery.cancel_scope.cancel()

            nursery.start_soon(watch_signals)
            await serve(
                config,
                token,
                host=options.host,
                port=options.port,
                settings=settings,
                shutdown_trigger=stop.wait,
            )
            nursery.cancel_scope.cancel()
    log.info("wasup stopped")


def run(options: ServeOptions, argv: Sequence[str] | None, env: Mapping[str, str]) -> int:
    """``wasup serve`` with ``options``; its exit status (``argv``: the command line ``main``
    was given, None for the process's own, for a re-execution).

    Resource handling: with the whatsmeow engine and no ``NEONIZE_BOT_TAG`` in the environment
    the process was started with, the process is replaced by itself with
    ``NEONIZE_BOT_TAG=off`` added (:mod:`api.startup`), before anything is printed or opened.
    The soft open-files limit is raised to the hard one.
    """
    # Before anything is printed, opened or imported for the engine: this may re-execute.
    bot_tag = startup.ensure_bot_tag(argv) if options.engine == "whatsmeow" else None
    configure(options.log_level, options.log_format)
    if bot_tag is not None:
        startup.log_bot_tag(bot_tag)
        try:
            startup.check_whatsmeow_importable()
        except startup.EngineUnavailable as exc:
            print(f"wasup: {exc}", file=sys.stderr)
            return 2
    startup.raise_open_files_limit()
    try:
        token, generated = load_or_create_token(options.data_dir, env)
    except OSError as exc:
        print(f"wasup: cannot load the operator token: {exc}", file=sys.stderr)
        return 1
    if generated:
        print(
            "wasup: generated an operator token (shown only this once; also stored in "
            f"{options.data_dir / TOKEN_FILE}):\n\n    {token}\n",
            flush=True,
        )
    elif not env.get("WASUP_API_TOKEN"):
        print(f"wasup: operator token is in {options.data_dir / TOKEN_FILE}", flush=True)
    tune_gc()
    try:
        trio.run(run_server, options, token)
    except KeyboardInterrupt:
        return 130
    except (OSError, ExceptionGroup) as exc:
        # A port in use, an unwritable data directory or a cluster node id another process
        # took over is an operator error, not a crash.
        operator = (OSError, NodeIdTaken)
        found = exc.subgroup(operator) if isinstance(exc, ExceptionGroup) else exc
        if found is None:
            raise
        first: BaseException = found
        while isinstance(first, ExceptionGroup):
            first = first.exceptions[0]
        print(f"wasup: {first}", file=sys.stderr)
        return 1
    return 0

