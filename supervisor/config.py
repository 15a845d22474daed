"""wasup's configuration: one frozen value with frozen sub-records, built once by the CLI.

Usage::

    config = Config(engine="simulator", allow_networks=["127.0.0.0/8"])
    config.webhooks.timeout          # 15.0
    config.allow_networks            # (IPv4Network('127.0.0.0/8'),)

Every consumer takes the record it needs (``config.webhooks``, ``config.autoreply``,
``config.sending``, ``config.media``, ``config.contacts``), typed; nothing reads a field that may be absent. Error handling: a value that cannot be a network in
``allow_networks`` raises ``ValueError`` naming it, when the Config is built.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from .policy import Backoff
from .webhooks.ssrf import IPNetwork, parse_networks


@attrs.frozen
class WebhookConfig:
    """The webhook dispatcher's knobs."""

    #: Seconds one delivery attempt may take.
    timeout: float = 15.0
    #: Deliveries in flight at once, over every device.
    concurrency: int = 32
    #: Deliveries in flight at once to one device's endpoint.
    endpoint_concurrency: int = 8
    #: Fraction of random spread on each retry delay.
    jitter: float = 0.1


@attrs.frozen
class AutoReplyConfig:
    """The AI auto-reply service's knobs."""

    #: Events buffered for the service before it is dropped as slow and resubscribes.
    queue_size: int = 4096
    #: Replies being generated at once, over every device.
    max_concurrent: int = 16
    #: Replies being generated at once for one device.
    per_device: int = 2
    #: Replies waiting or under way before new messages are dropped (counted as busy).
    max_pending: int = 256
    #: Seconds after which an incoming message is too old to answer (offline backlog).
    max_message_age: float = 600.0


@attrs.frozen
class SendingConfig:
    """The outbound queue's knobs: pacing defaults (a device's ``sending`` settings override the
    rate and burst), bounds and timings of tracked sends."""

    #: Sends waiting in one device's queue before one more is refused (429).
    queue_size: int = 1000
    #: The token bucket: sends per minute on average, and how many may go out back to back.
    rate_per_minute: float = 60.0
    burst: int = 5
    #: Random extra wait after each paced send, as a fraction of the interval between sends.
    jitter: float = 0.2
    #: Seconds a send may wait for the device to connect before it fails with ``expired``.
    ttl: float = 300.0
    #: The longest ``ttl`` a request may ask for.
    max_ttl: float = 86400.0
    #: Seconds after which a send still not acknowledged raises ``message_stuck`` (once).
    stuck_after: float = 60.0


@attrs.frozen
class MediaConfig:
    """The media store's and media sends' knobs: the cache's cap, WhatsApp's size limits per
    kind (bytes), how long fetching a send's ``media.url`` and downloading a message's file
    may take."""

    #: Bytes of downloaded and sent files kept in ``<data_dir>/media/cache`` (least recently
    #: used out first; files a queued send still needs are not counted and never evicted).
    cache_bytes: int = 1 << 30
    max_image: int = 16 << 20
    max_video: int = 64 << 20
    max_audio: int = 16 << 20
    max_document: int = 100 << 20
    max_sticker: int = 1 << 20
    #: Seconds fetching a send's ``"media": {"url"}`` may take.
    url_timeout: float = 30.0
    #: Seconds downloading a message's file from WhatsApp may take (``GET …/media``: 504).
    download_timeout: float = 120.0


@attrs.frozen
class ContactsConfig:
    """Contact checks' knobs (:mod:`supervisor.contacts`): how long an answer is reused, and
    how many numbers a device may ask WhatsApp about (WhatsApp bans accounts that check too
    many)."""

    #: Seconds a number's check result is answered from wasup's cache (0: never cached).
    check_cache_seconds: float = 86400.0
    #: Numbers one device may ask WhatsApp about per hour (cache hits do not count).
    checks_per_hour: int = 500
    #: The most numbers one check request may hold.
    check_batch_max: int = 50


@attrs.frozen
class ClusterConfig:
    """One node of several on one PostgreSQL (``Config.cluster``; None: a single node)."""

    #: This node's name, unique in the cluster.
    node_id: str
    #: The URL other nodes reach this node's API at (``http://host:port``).
    advertise_url: str
    #: The secret shared by every node: forwarded requests are signed with it.
    secret: str = attrs.field(repr=False)
    #: Devices this node runs at most (None: unbounded).
    capacity: int | None = None
    #: Seconds a device's lease lasts, by the database's clock.
    lease_seconds: float = 15.0
    #: Seconds between renewals of this node's leases (and its heartbeat).
    renew_seconds: float = 5.0
    #: Seconds between scans for free and expired devices.
    scan_seconds: float = 2.0
    #: Devices this node may take from others per minute when it joins (rebalancing).
    rebalance_per_minute: int = 30


@attrs.frozen
class Config:
    data_dir: Path = attrs.field(default=Path("./data"), converter=Path)
    #: PostgreSQL's URL (``postgresql://…``) to keep wasup's data in; None: SQLite,
    #: ``data_dir/wasup.db``.
    database_url: str | None = None
    engine: str = "whatsmeow"
    max_concurrent_logins: int = 5
    # QR codes: the first shows for 60 s, each next one for 20 s, at most 3 of them.
    qr_first_timeout: float = 60.0
    qr_next_timeout: float = 20.0
    qr_max_attempts: int = 3
    # A pair code may be entered this long after the first QR code (whatsmeow's own limit).
    pair_code_window: float = 160.0
    # Reconnect backoff (a timeout of the disconnected state).
    backoff_base: float = 2.0
    backoff_factor: float = 2.0
    backoff_cap: float = 300.0
    backoff_jitter: float = 0.2
    # The slow reconnect of reasons only an upgrade or WhatsApp fixes (client_outdated...).
    slow_retry: float = 900.0
    # How long a login handshake (connecting, or pairing until the first QR) may take.
    connect_timeout: float = 60.0
    mailbox_size: int = 64
    call_timeout: float = 10.0
    # Crash restarts of a device actor: at most `restart_intensity` in `restart_period` seconds.
    restart_intensity: int = 5
    restart_period: float = 60.0
    restart_backoff_base: float = 0.5
    restart_backoff_cap: float = 30.0
    restart_backoff_jitter: float = 0.2
    seed: int | None = None
    simulator_seed: int = 0
    simulator_latency: float = 0.5
    #: Private networks the SSRF guard lets outbound requests reach (webhooks, AI providers).
    allow_networks: tuple[IPNetwork, ...] = attrs.field(default=(), converter=parse_networks)
    event_queue_size: int = 256
    #: Messages are kept this many days after wasup stored them (0: no age limit).
    message_retention_days: int = 90
    #: At most this many messages are kept per device, the newest (0: no count limit).
    message_retention_count: int = 100_000
    #: Events are kept in the event log this many days (0: no age limit).
    event_retention_days: int = 7
    webhooks: WebhookConfig = attrs.field(factory=WebhookConfig)
    autoreply: AutoReplyConfig = attrs.field(factory=AutoReplyConfig)
    sending: SendingConfig = attrs.field(factory=SendingConfig)
    media: MediaConfig = attrs.field(factory=MediaConfig)
    contacts: ContactsConfig = attrs.field(factory=ContactsConfig)
    #: Several nodes on one PostgreSQL (requires ``database_url``); None: one node.
    cluster: ClusterConfig | None = None
    #: A shared simulated WhatsApp (``wasup simulator serve``) at this URL; None: in process.
    simulator_url: str | None = None

    @property
    def database_path(self) -> Path:
        return self.data_dir / "wasup.db"

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def backoff(self) -> Backoff:
        return Backoff(
            base=self.backoff_base,
            factor=self.backoff_factor,
            cap=self.backoff_cap,
            jitter=self.backoff_jitter,
        )

    @property
    def slow_backoff(self) -> Backoff:
        """The slow reconnect delay: ``slow_retry`` with the backoff's jitter."""
        return Backoff(
            base=self.slow_retry,
            factor=1.0,
            cap=self.slow_retry * (1 + self.backoff_jitter),
            jitter=self.backoff_jitter,
        )

    @property
    def restart_backoff(self) -> Backoff:
        return Backoff(
            base=self.restart_backoff_base,
            factor=2.0,
            cap=self.restart_backoff_cap,
            jitter=self.restart_backoff_jitter,
        )
