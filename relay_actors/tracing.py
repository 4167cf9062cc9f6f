"""OpenTelemetry traces of calls and messages: the only module that imports ``opentelemetry``.

Each call is one trace: a root span ``relay.call`` from the offer's arrival (or the
dial) to the call's end, with spans under it for admission and placement (made by the
connection actor, on Ray), the link hop, the handler run, each command sent
(``relay.method``, ``relay.code``) and each event handled (``relay.event_type``).
Each message is one trace too (``relay.message``, with ``relay.message_id``).

Tracing is **off** unless the standard variables ask for it (``OTEL_TRACES_EXPORTER=otlp``,
with ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_PROTOCOL``, ``OTEL_SERVICE_NAME``,
``OTEL_TRACES_SAMPLER``, ...) or, in-process, the application has set its own SDK
``TracerProvider`` (then that one is used). Off, :data:`ENABLED` is False, nothing of
OpenTelemetry is imported and the hooks cost one flag or attribute test each.

On Ray the driver reads the variables (:func:`environment`), stores them with the app's
secrets (headers may hold credentials) and every actor reads them back at start
(:mod:`relay_actors.ray_runtime.tracing_setup`). A call's root span is started in the
CallActor, with the trace and span ids the connection actor chose when the offer
arrived: they travel on the link as an optional trailing field of the ``OFFER`` item
(:func:`placed`), present only when tracing is on. The root span therefore lives in
the process that holds the call to its end, and survives a connection actor's restart.

The SDK and the OTLP/HTTP exporter are the optional extra ``relay-actors[otel]``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Coroutine, Mapping
from typing import Any

from .errors import RelayError

__all__ = [
    "ENABLED",
    "CallTrace",
    "MessageTrace",
    "call_started",
    "dial_started",
    "environment",
    "flush",
    "log_ids",
    "message_received",
    "message_sending",
    "offer_arrived",
    "placed",
    "requested",
    "setup",
    "shutdown",
]

log = logging.getLogger("relay_actors.tracing")

#: True while traces are made (the one flag the hot paths test).
ENABLED = False

#: The instrumentation scope's name.
SCOPE = "relay_actors"
#: Variables whose values may hold credentials: carried like secrets, never put in an
#: actor's environment (the exporter gets them as an argument).
SECRET_VARS = ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS")
#: Offers that arrived at a connection actor and are not placed yet (beyond: oldest forgotten).
MAX_ARRIVALS = 10_000

_tracer: Any = None
_provider: Any = None
#: Our own provider's id generator (None with a user's provider): sets the root's ids.
_ids: Any = None
_owned = False
_arrivals: OrderedDict[str, int] = OrderedDict()
#: Offers placed lately: call_id → (trace_id, root span id, arrived, sampled). An offer a
#: full CallActor refused is placed again in the same trace (beyond: oldest forgotten).
_placed: OrderedDict[str, tuple[int, int, int, bool]] = OrderedDict()
_warned_missing = False


# --- configuration ----------------------------------------------------------------------


def requested(env: Mapping[str, str]) -> bool:
    """Whether ``env`` asks for traces (``OTEL_TRACES_EXPORTER`` names otlp or console)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = {n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")}
    return bool(names & {"otlp", "console"})


def environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``OTEL_*`` variables to carry to an app's actors ({} when tracing is not asked for)."""
    env = os.environ if env is None else env
    if not requested(env):
        return {}
    return {k: v for k, v in env.items() if k.startswith("OTEL_")}


def _user_provider() -> Any:
    """The application's own SDK TracerProvider, if it set one (without importing anything)."""
    api = sys.modules.get("opentelemetry.trace")
    if api is None:
        return None
    provider = api.get_tracer_provider()
    if isinstance(provider, (api.ProxyTracerProvider, api.NoOpTracerProvider)):
        return None
    return provider


def setup(
    *,
    app: str = "",
    role: str = "client",
    env: Mapping[str, str] | None = None,
    resource: Mapping[str, Any] | None = None,
    provider: Any = None,
) -> bool:
    """Turn tracing on if asked for; returns whether it is on. Idempotent (the first wins).

    Args:
        app: the app's name (``relay.app`` on the resource).
        role: this process's part (``client``, ``driver``, ``connection``, ``call_actor``).
        env: the ``OTEL_*`` variables (None: this process's environment, and a
            TracerProvider the application set is honoured).
        resource: more resource attributes (the Ray node, the actor's name).
        provider: a TracerProvider to use (a test's, or the application's).
    """
    global ENABLED, _tracer, _provider, _ids, _owned, _warned_missing
    if ENABLED:
        return True
    if provider is None and env is None:
        provider = _user_provider()
    if provider is not None:
        from opentelemetry import trace

        _provider, _ids, _owned = provider, None, False
        _tracer = trace.get_tracer(SCOPE, tracer_provider=provider)
        ENABLED = True
        return True
    source: Mapping[str, str] = os.environ if env is None else env
    if not requested(source):
        return False
    try:
        made = _make_provider(source, env is not None, app, role, resource or {})
    except ImportError as exc:
        if not _warned_missing:
            _warned_missing = True
            log.warning(
                "OTEL_TRACES_EXPORTER asks for traces but OpenTelemetry is not installed (%s): "
                "pip install 'relay-actors[otel]'",
                exc,
            )
        return False
    if made is None:
        return False
    _provider, _ids = made
    _owned = True
    _tracer = _provider.get_tracer(SCOPE)
    ENABLED = True
    return True


def _make_provider(
    env: Mapping[str, str], carried: bool, app: str, role: str, extra: Mapping[str, Any]
) -> tuple[Any, Any] | None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    if carried:
        # An actor: the SDK resolves the endpoint, protocol, sampler and batch settings from
        # the standard variables; headers stay out of the environment (see SECRET_VARS).
        for key, value in env.items():
            if key.startswith("OTEL_") and key not in SECRET_VARS:
                os.environ[key] = value
    exporters = []
    for name in {n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")}:
        if name == "otlp":
            exporters.append(_otlp_exporter(env))
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
    exporters = [e for e in exporters if e is not None]
    if not exporters:
        return None

    class _Ids(RandomIdGenerator):
        """Random ids, except a root whose ids were chosen upstream (:func:`call_started`)."""

        def __init__(self) -> None:
            self.local = threading.local()

        def generate_trace_id(self) -> int:
            preset = getattr(self.local, "trace_id", 0)
            return preset or int(super().generate_trace_id())

        def generate_span_id(self) -> int:
            preset = getattr(self.local, "span_id", 0)
            if preset:
                self.local.span_id = 0
                self.local.trace_id = 0
                return int(preset)
            return int(super().generate_span_id())

    attributes: dict[str, Any] = {"process.pid": os.getpid(), "relay.role": role}
    if app:
        attributes["relay.app"] = app
    attributes.update((k, v) for k, v in extra.items() if v)
    service = env.get("OTEL_SERVICE_NAME")
    if service:
        attributes["service.name"] = service
    resource = Resource.create(attributes)
    if not service and str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "relay-actors"}))
    ids = _Ids()
    provider = TracerProvider(resource=resource, id_generator=ids, shutdown_on_exit=True)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, ids


def _otlp_exporter(env: Mapping[str, str]) -> Any:
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip() or "http/protobuf"
    headers_text = env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS")
    headers = None
    if headers_text:
        from opentelemetry.util.re import parse_env_headers

        headers = dict(parse_env_headers(headers_text, liberal=True))
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
        except ImportError:
            log.warning(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc; "
                "relay-actors[otel] ships http/protobuf: traces are off"
            )
            return None
        return Grpc(headers=headers)
    if protocol != "http/protobuf":
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported (http/protobuf or grpc)", protocol)
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(headers=headers)


def flush(timeout: float = 5.0) -> bool:
    """Export the spans ended so far (True when all went out in time)."""
    if not ENABLED or _provider is None or not hasattr(_provider, "force_flush"):
        return True
    return bool(_provider.force_flush(int(timeout * 1000)))


def shutdown() -> None:
    """Turn tracing off (our own provider is flushed and shut down)."""
    global ENABLED, _tracer, _provider, _ids, _owned
    provider, owned = _provider, _owned
    ENABLED, _tracer, _provider, _ids, _owned = False, None, None, None, False
    _arrivals.clear()
    _placed.clear()
    if owned and provider is not None:
        provider.shutdown()


# --- on Ray, the connection actor's part ---------------------------------------------------


def offer_arrived(call_id: str) -> None:
    """An offer reached a connection actor (its admission starts now)."""
    _arrivals[call_id] = time.time_ns()
    if len(_arrivals) > MAX_ARRIVALS:
        _arrivals.popitem(last=False)


def placed(call_id: str, call_actor: int) -> list[Any]:
    """The offer of ``call_id`` is placed on CallActor ``call_actor``: the admission and
    placement spans are made; returns the trace field its offer item carries for
    :func:`call_started`: ``[trace_id, root_span_id, arrived_ns, sent_ns]`` (hex ids), or
    ``[]`` when the call is not sampled. An offer placed again (refused by a full
    CallActor) keeps its trace and gets another placement span."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    now = time.time_ns()
    again = _placed.get(call_id)
    if again is not None:
        trace_id, root_id, arrived, sampled = again
    else:
        arrived = _arrivals.pop(call_id, now)
        ids = RandomIdGenerator()
        trace_id, root_id = ids.generate_trace_id(), ids.generate_span_id()
        sampler = getattr(_provider, "sampler", None)
        sampled = sampler is None or sampler.should_sample(None, trace_id, "relay.call").decision.is_sampled()
        _placed[call_id] = (trace_id, root_id, arrived, sampled)
        if len(_placed) > MAX_ARRIVALS:
            _placed.popitem(last=False)
    if not sampled:
        return []
    root = trace.SpanContext(trace_id, root_id, True, trace.TraceFlags(trace.TraceFlags.SAMPLED))
    parent = trace.set_span_in_context(trace.NonRecordingSpan(root))
    attributes = {"relay.call_id": call_id, "relay.call_actor": call_actor}
    if again is None:
        admission = _tracer.start_span("relay.admission", parent, start_time=arrived, attributes=attributes)
        admission.end(now)
    placement = _tracer.start_span("relay.placement", parent, start_time=now, attributes=attributes)
    sent = time.time_ns()
    placement.end(sent)
    return [f"{trace_id:032x}", f"{root_id:016x}", arrived, sent]


# --- calls -------------------------------------------------------------------------------


class CallTrace:
    """One call's trace: its root span, and the spans made under it."""

    __slots__ = ("context", "root", "trace_id")

    def __init__(self, root: Any) -> None:
        from opentelemetry import trace

        self.root = root
        self.trace_id = root.get_span_context().trace_id
        self.context = trace.set_span_in_context(root)

    def identify(self, call: Any, app: str) -> None:
        """The call's attributes on the root span."""
        self.root.set_attributes(
            {
                "relay.call_id": call.call_id,
                "relay.node_id": call.node_id or "",
                "relay.context": call.context or "",
                "relay.direction": call.direction or "",
                "relay.app": app,
            }
        )

    def _parent(self) -> Any:
        """The current span if it belongs to this call's trace (the handler's), else the root."""
        from opentelemetry import trace

        current = trace.get_current_span()
        if current.get_span_context().trace_id == self.trace_id:
            return None  # the current context
        return self.context

    async def command(self, control: Any, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """``control.execute(method, params)`` in a ``relay.method`` span with its result code."""
        from opentelemetry import trace

        span = _tracer.start_span(
            method,
            self._parent(),
            kind=trace.SpanKind.CLIENT,
            attributes={"relay.method": method, "relay.call_id": str(params.get("call_id") or "")},
        )
        try:
            result: dict[str, Any] = await control.execute(method, params)
        except RelayError as exc:
            span.set_attribute("relay.code", str(exc.code))
            if exc.failure:  # a client-side failure (code -1): which one
                span.set_attribute("relay.failure", exc.failure)
            span.set_status(trace.Status(trace.StatusCode.ERROR, exc.message))
            raise
        except BaseException as exc:
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
            raise
        else:
            span.set_attribute("relay.code", str(result.get("code") or "200"))
            return result
        finally:
            span.end()

    def deliver(self, call: Any, event: Any) -> None:
        """``call`` handles ``event`` in a ``relay.event`` span."""
        attributes = {"relay.event_type": event.event_type}
        state = event.params.get("call_state")
        if state:
            attributes["relay.call_state"] = state
        span = _tracer.start_span("relay.event", self.context, attributes=attributes)
        try:
            call._apply_event(event)
        finally:
            span.end()

    async def run(self, coro: Coroutine[Any, Any, Any], name: str = "relay.handler") -> None:
        """Await ``coro`` (a handler run) in a span, current in its task (log records and
        the commands it sends hang under it)."""
        from opentelemetry import trace

        span = _tracer.start_span(name, self.context)
        with trace.use_span(span, end_on_exit=True):
            await coro

    def end(self, reason: str, error: str = "") -> None:
        """The call ended (``relay.end_reason``)."""
        if not self.root.is_recording():
            return
        self.root.set_attribute("relay.end_reason", reason or "")
        if error:
            from opentelemetry import trace

            self.root.set_status(trace.Status(trace.StatusCode.ERROR, error))
        self.root.end()


def call_started(call: Any, app: str, upstream: list[Any] | None = None) -> CallTrace | None:
    """The trace of an offered ``call``; ``upstream``: the trailing field of its ``OFFER``
    item (on Ray), whose ids and arrival time the root takes. None: not sampled."""
    from opentelemetry import trace

    start = None
    if upstream is not None:
        if not upstream:
            return None  # the connection actor did not sample it
        trace_id, span_id, start, sent = upstream
        if _ids is not None:
            _ids.local.trace_id, _ids.local.span_id = int(trace_id, 16), int(span_id, 16)
    kind = trace.SpanKind.SERVER if call.direction == "inbound" else trace.SpanKind.INTERNAL
    root = _tracer.start_span("relay.call", trace.Context(), kind=kind, start_time=start)
    if not root.is_recording():
        return None
    traced = CallTrace(root)
    traced.identify(call, app)
    if upstream:
        link = _tracer.start_span("relay.link", traced.context, start_time=sent)
        link.end()
    return traced


def dial_started(tag: str, app: str) -> CallTrace | None:
    """The trace of a dial (its call's, once one answers). None: not sampled."""
    from opentelemetry import trace

    attributes = {"relay.direction": "outbound", "relay.dial_tag": tag, "relay.app": app}
    root = _tracer.start_span(
        "relay.call", trace.Context(), kind=trace.SpanKind.CLIENT, attributes=attributes
    )
    return CallTrace(root) if root.is_recording() else None


# --- messages ------------------------------------------------------------------------------


class MessageTrace:
    """One message's trace (its root span ``relay.message``)."""

    __slots__ = ("context", "root")

    def __init__(self, root: Any) -> None:
        from opentelemetry import trace

        self.root = root
        self.context = trace.set_span_in_context(root)

    async def run(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Await ``coro`` (the ``on_message`` handler) under the root, then end it."""
        from opentelemetry import trace

        span = _tracer.start_span("relay.handler", self.context)
        try:
            with trace.use_span(span, end_on_exit=True):
                await coro
        finally:
            self.root.end()

    async def send(self, control: Any, params: dict[str, Any]) -> dict[str, Any]:
        """``messaging.send`` in a command span; the root learns the message id."""
        from opentelemetry import trace

        span = _tracer.start_span(
            "messaging.send",
            self.context,
            kind=trace.SpanKind.CLIENT,
            attributes={"relay.method": "messaging.send"},
        )
        try:
            result: dict[str, Any] = await control.execute("messaging.send", params)
        except RelayError as exc:
            span.set_attribute("relay.code", str(exc.code))
            if exc.failure:  # a client-side failure (code -1): which one
                span.set_attribute("relay.failure", exc.failure)
            span.set_status(trace.Status(trace.StatusCode.ERROR, exc.message))
            self.end("", exc.message)
            raise
        finally:
            span.end()
        span.set_attribute("relay.code", str(result.get("code") or "200"))
        self.root.set_attribute("relay.message_id", str(result.get("message_id") or ""))
        return result

    def state(self, state: str, finished: bool) -> None:
        """A state event (``relay.message_state`` at the end)."""
        self.root.add_event("relay.message_state", {"relay.message_state": state})
        if finished:
            self.end(state)

    def end(self, state: str, error: str = "") -> None:
        if not self.root.is_recording():
            return
        if state:
            self.root.set_attribute("relay.message_state", state)
        if error:
            from opentelemetry import trace

            self.root.set_status(trace.Status(trace.StatusCode.ERROR, error))
        self.root.end()


def message_received(message: Any, app: str) -> MessageTrace | None:
    """The trace of an inbound message (its handler runs under it). None: not sampled."""
    from opentelemetry import trace

    attributes = {
        "relay.message_id": message.message_id,
        "relay.direction": "inbound",
        "relay.context": message.context or "",
        "relay.app": app,
    }
    root = _tracer.start_span(
        "relay.message", trace.Context(), kind=trace.SpanKind.SERVER, attributes=attributes
    )
    return MessageTrace(root) if root.is_recording() else None


def message_sending(context: str, app: str) -> MessageTrace | None:
    """The trace of an outbound message, from its send to its final state."""
    from opentelemetry import trace

    attributes = {"relay.direction": "outbound", "relay.context": context, "relay.app": app}
    root = _tracer.start_span(
        "relay.message", trace.Context(), kind=trace.SpanKind.CLIENT, attributes=attributes
    )
    return MessageTrace(root) if root.is_recording() else None


# --- logs ----------------------------------------------------------------------------------


def log_ids() -> tuple[str, str]:
    """The current span's trace and span ids in hex (``"-"`` outside any span)."""
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return "-", "-"
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
