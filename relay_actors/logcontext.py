"""Per-call log context: every record logged while a handler runs carries its call id and app.

The handler runner sets :data:`call_id` / :data:`app` (context variables, so tasks a
handler starts inherit them) and installs a log record factory once per process:
every record then has ``call_id``, ``message_id``, ``app`` and ``node`` attributes
(``"-"`` outside a handler; ``node`` is the Ray node's address in a CallActor), and
``message_tag`` (`` message_id=<id>`` inside an ``on_message`` handler, else empty), and
``trace_id``/``span_id`` (hex, of the current span while tracing is on, see
:mod:`relay_actors.tracing`; ``"-"`` otherwise) so logs and traces join. A standard
formatter shows them::

    logging.basicConfig(format=relay_actors.logcontext.LOG_FORMAT, level=logging.INFO)

One call's lines: ``grep <call_id>`` in that output (or filter on ``record.call_id``);
one message's: ``grep <message_id>``. ``relay-actors run`` logs in :data:`RUN_LOG_FORMAT`,
in-process as on Ray.

On Ray, each CallActor logs at the level the app's driver has (:func:`configure_call_actor`)
in :data:`ACTOR_LOG_FORMAT` to its stderr, which Ray forwards to the driver: the records
show in ``ray job logs`` (and the driver's output), each with its app, node and call id.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any

from . import tracing

__all__ = [
    "ACTOR_LOG_FORMAT",
    "LOG_FORMAT",
    "RUN_LOG_FORMAT",
    "app",
    "bind",
    "call_id",
    "configure_call_actor",
    "install",
    "message_id",
]

#: A format showing the context: ``2026-11-28 07:00:00,000 INFO ivr 5f0c... my_app: pressed 1``.
LOG_FORMAT = "%(asctime)s %(levelname)s %(app)s %(call_id)s%(message_tag)s %(name)s: %(message)s"
#: What ``relay-actors run`` logs in, in-process: the context, named.
RUN_LOG_FORMAT = (
    "%(asctime)s %(levelname)s app=%(app)s call_id=%(call_id)s%(message_tag)s %(name)s: %(message)s"
)
#: What CallActors log in: the context and the node.
ACTOR_LOG_FORMAT = (
    "%(asctime)s %(levelname)s app=%(app)s node=%(node)s call_id=%(call_id)s%(message_tag)s "
    "%(name)s: %(message)s"
)

call_id: contextvars.ContextVar[str] = contextvars.ContextVar("relay_call_id", default="-")
message_id: contextvars.ContextVar[str] = contextvars.ContextVar("relay_message_id", default="-")
app: contextvars.ContextVar[str] = contextvars.ContextVar("relay_app", default="-")
#: This process's node (set once in a CallActor).
_node = "-"

_installed = False


def install() -> None:
    """Wrap the log record factory (once; the previous factory still runs first)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.call_id = call_id.get()
        message = message_id.get()
        record.message_id = message
        record.message_tag = "" if message == "-" else f" message_id={message}"
        record.app = app.get()
        record.node = _node
        if tracing.ENABLED:
            record.trace_id, record.span_id = tracing.log_ids()
        else:
            record.trace_id = record.span_id = "-"
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


def bind(*, call: str = "-", message: str = "-", app_name: str = "-") -> None:
    """Set the context of the current task (a handler's own task: nothing to reset)."""
    install()
    call_id.set(call)
    message_id.set(message)
    app.set(app_name or "-")


def configure_call_actor(level: int | str | None, node: str) -> None:
    """Log from this CallActor at the app's ``level`` (None: leave logging alone) to stderr
    in :data:`ACTOR_LOG_FORMAT`, records tagged with ``node``. The process's root logger
    is ours to set: a Ray worker runs nothing else."""
    global _node
    _node = node or "-"
    install()
    if level is None:
        return
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(ACTOR_LOG_FORMAT))
    handler.set_name("relay_actors.call_actor")
    for old in [h for h in root.handlers if h.get_name() == "relay_actors.call_actor"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
