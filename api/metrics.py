"""Health and Prometheus metrics.

``GET /api/whatsapp/health`` answers ``{"success": true, "data": {"status": "ok"}}`` without a
credential (for load balancers; it says nothing about devices). ``GET /api/whatsapp/ready``
(no credential either) answers ``{"status": "ready"}``, or 503 ``STORAGE_UNAVAILABLE`` with
Retry-After while the database cannot store anything (a full disk). ``GET /metrics`` is the
Prometheus text format and needs the operator token, as ``X-API-TOKEN`` or
``Authorization: Bearer <token>`` (what Prometheus' ``authorization`` scrape setting sends)::

    wasup_http_requests_total{method,route,status}     counter
    wasup_http_request_duration_seconds{route}         histogram
    wasup_devices{status}                              gauge, per device status
    wasup_logins_in_flight                             gauge
    wasup_actor_crashes                                gauge (crash restarts since start)
    wasup_engine_info{neonize_version,wa_version}      gauge, always 1: the installed neonize
                                                       and the WhatsApp web version it presents
    wasup_reconnects_total                             counter: disconnected -> connecting
    wasup_messages_total{direction}                    counter: in (received), out (sent)
    wasup_device_state_seconds{state}                  histogram: how long devices stayed in a
                                                       status, observed when they leave it (not
                                                       the status a device had when this process
                                                       first saw it change: its start is unknown)
    wasup_webhook_lag_seconds                          histogram: from an event to its
                                                       successful webhook delivery

None of these has a label per device: a label's values are the statuses or the two directions,
so the series stay few however many devices there are. Asked for (``wasup serve
--metrics-device-labels``), one more family has one series per device::

    wasup_device_status{device,status}                 gauge, 1: the device (its sessionId) is
                                                       in that status The first three come from the event bus
(a tap, :class:`Operations`); the webhook lag from the dispatcher (``lag_observer``).

Each app has its own registry, so several apps in one process (tests) do not collide.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from quart import Blueprint, Quart, Response, current_app, g, request

from api.auth import NOT_AUTHENTICATED, authenticate
from api.errors import ApiError
from api.routes_devices import ok
from api.state import current_state
from storage.errors import StorageUnavailable
from supervisor.devices import Devices, DevicesStatistics
from supervisor.engines.neonize_info import EngineInfo, engine_info
from supervisor.events import Event
from supervisor.payloads import MessageReceived, MessageSent, StatusChanged
from supervisor.readiness import readiness
from supervisor.state import Status

health_bp = Blueprint("meta", __name__)
metrics_bp = Blueprint("metrics", __name__)


def families(stats: DevicesStatistics) -> Iterator[GaugeMetricFamily]:
    """The device gauges for one :class:`DevicesStatistics`."""
    devices = GaugeMetricFamily("wasup_devices", "Devices per status", labels=["status"])
    for status in Status:
        devices.add_metric([status.value], float(stats.by_status.get(status.value, 0)))
    yield devices
    yield GaugeMetricFamily(
        "wasup_logins_in_flight",
        "Devices in a login handshake now",
        value=float(stats.logins_in_flight),
    )
    yield GaugeMetricFamily(
        "wasup_actor_crashes",
        "Device actor crashes since start",
        value=float(stats.crashes),
    )


def engine_info_family(info: EngineInfo) -> GaugeMetricFamily:
    """``wasup_engine_info``: 1, labelled with the neonize release and the WhatsApp web version
    compiled into it (``unknown`` where not found). When WhatsApp starts refusing that version
    (devices go ``disconnected`` with ``client_outdated``), upgrading neonize is the remedy."""
    family = GaugeMetricFamily(
        "wasup_engine_info",
        "The installed neonize release and the WhatsApp web version it presents",
        labels=["neonize_version", "wa_version"],
    )
    family.add_metric([info.neonize_version or "unknown", info.wa_version or "unknown"], 1.0)
    return family


class _EngineInfoCollector(Collector):
    """Reads the cached :func:`engine_info`; ``/metrics`` fills that cache in a worker thread
    (scanning neonize's 19 MB library takes a tenth of a second: not on the Trio thread)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield engine_info_family(engine_info())


class _DevicesCollector(Collector):
    def __init__(self, devices: Devices) -> None:
        self.devices = devices

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return families(self.devices.statistics())


#: Histogram buckets for time in a status (seconds: from a second to a week).
STATE_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600)
#: Histogram buckets for the webhook lag (seconds: immediate delivery up to the retry schedule).
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 36000)


@attrs.define(eq=False)
class Operations:
    """The aggregate instruments fed by the event bus and the webhook dispatcher."""

    reconnects: Counter
    messages: Counter
    state_seconds: Histogram
    webhook_lag: Histogram
    #: When each device entered its current status (trio time), from the events seen.
    _entered: dict[int, float] = attrs.field(factory=dict)

    @classmethod
    def register(cls, registry: CollectorRegistry) -> Operations:
        return cls(
            reconnects=Counter("wasup_reconnects", "Reconnects (disconnected -> connecting)",
                               registry=registry),
            messages=Counter("wasup_messages", "Messages received (in) and sent (out)",
                             ["direction"], registry=registry),
            state_seconds=Histogram(
                "wasup_device_state_seconds", "Time devices stayed in a status, by status",
                ["state"], registry=registry, buckets=STATE_BUCKETS),
            webhook_lag=Histogram(
                "wasup_webhook_lag_seconds", "From an event to its successful webhook delivery",
                registry=registry, buckets=LAG_BUCKETS),
        )

    def observe(self, event: Event) -> None:
        """The bus tap: count and time what ``event`` says (quick, never raises)."""
        data = event.data
        if isinstance(data, StatusChanged):
            now = trio.current_time()
            entered = self._entered.get(event.device_id)
            if entered is not None:
                self.state_seconds.labels(data.before.value).observe(now - entered)
            self._entered[event.device_id] = now
            if data.before is Status.DISCONNECTED and data.after is Status.CONNECTING:
                self.reconnects.inc()
        elif isinstance(data, MessageReceived):
            self.messages.labels("in").inc()
        elif isinstance(data, MessageSent):
            self.messages.labels("out").inc()

    def observe_lag(self, seconds: float) -> None:
        """A webhook delivery succeeded ``seconds`` after its event."""
        self.webhook_lag.observe(max(0.0, seconds))


class _DeviceLabelsCollector(Collector):
    """``wasup_device_status{device,status}``: one series per device (only when asked for)."""

    def __init__(self, devices: Devices) -> None:
        self.devices = devices

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "wasup_device_status", "Each device's status (1), by sessionId",
            labels=["device", "status"],
        )
        for row in sorted(self.devices.rows.values(), key=lambda r: r.id):
            family.add_metric([row.session_id, row.status], 1.0)
        yield family


class Metrics:
    """The registry and HTTP instruments of one app."""

    def __init__(self, devices: Devices, *, device_labels: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "wasup_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "wasup_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.registry.register(_DevicesCollector(devices))
        self.registry.register(_EngineInfoCollector())
        self.operations = Operations.register(self.registry)
        if device_labels:
            self.registry.register(_DeviceLabelsCollector(devices))
        for direction in ("in", "out"):  # both series exist from the start, at 0
            self.operations.messages.labels(direction)


def operations(app: Quart) -> Operations:
    """The aggregate instruments of ``app`` (the composition root taps the event bus with
    :meth:`Operations.observe` and hands the dispatcher's webhook lag to
    :meth:`Operations.observe_lag`)."""
    metrics: Metrics = app.extensions["wasup.metrics"]
    return metrics.operations


def install(app: Quart, devices: Devices, *, device_labels: bool = False) -> None:
    """Register the health and metrics routes and the request instruments on ``app``
    (``device_labels``: the per-device family too)."""
    metrics = Metrics(devices, device_labels=device_labels)
    app.extensions["wasup.metrics"] = metrics

    @app.before_request
    async def _start_timer() -> None:
        g.metrics_start = trio.current_time()

    @app.after_request
    async def _observe(response: Response) -> Response:
        rule = request.url_rule
        route = rule.rule if rule is not None else "unmatched"
        metrics.requests.labels(request.method, route, str(response.status_code)).inc()
        start = g.get("metrics_start")
        if start is not None:
            metrics.duration.labels(route).observe(trio.current_time() - start)
        return response


@health_bp.get("/health")
async def health() -> Response:
    return ok({"status": "ok"})


@health_bp.get("/ready")
async def ready() -> Response:
    """Readiness: 200 when the database takes writes, every device is restored and the engine
    has loaded; else 503 naming the first failing check (STORAGE_UNAVAILABLE for the database,
    checked again at most every few seconds, so a poller also notices when it is back)."""
    found = await readiness(current_state().sup)
    failing = found.failing
    if failing is not None and failing.name == "database":
        outage = current_state().sup.db.outage
        raise StorageUnavailable(outage.reason if outage is not None else failing.message)
    if failing is not None:
        raise ApiError(503, "SERVICE_UNAVAILABLE", f"not ready: {failing.name}: {failing.message}",
                       headers={"Retry-After": "1"})
    checks = {c.name: {"status": "pass", "message": c.message} for c in found.checks}
    return ok({"status": "ready", "checks": checks})


@metrics_bp.get("/metrics")
async def metrics_text() -> Response:
    state = current_state()
    token = request.headers.get("X-API-TOKEN")
    if token is None:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
    principal = await authenticate(state, token)
    if principal is None:
        raise ApiError(401, "AUTHENTICATION_FAILED", NOT_AUTHENTICATED)
    if not principal.is_operator:
        raise ApiError(403, "FORBIDDEN", "metrics need the operator token")
    metrics: Metrics = current_app.extensions["wasup.metrics"]
    await trio.to_thread.run_sync(engine_info)  # cached after the first scrape
    return Response(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST)
