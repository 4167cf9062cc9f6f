"""Per-call log context: every record logged while a handler runs carries its call id and app.

The handler runner sets :data:`call_id` / :data:`app` (context variables, so tasks a
handler starts inherit them) and installs a log record factory once per process:
every record then has ``call_id``, ``message_id`` and ``app`` attributes (``"-"``
outside a handler), and a standard formatter shows them::

    logging.basicConfig(format=relay_actors.logcontext.LOG_FORMAT, level=logging.INFO)

One call's lines: ``grep <call_id>`` in that output (or filter on ``record.call_id``).
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

__all__ = ["LOG_FORMAT", "app", "bind", "call_id", "install", "message_id"]

#: A format showing the context: ``2026-11-28 07:00:00,000 INFO ivr 5f0c... my_app: pressed 1``.
LOG_FORMAT = "%(asctime)s %(levelname)s %(app)s %(call_id)s %(name)s: %(message)s"

call_id: contextvars.ContextVar[str] = contextvars.ContextVar("relay_call_id", default="-")
message_id: contextvars.ContextVar[str] = contextvars.ContextVar("relay_message_id", default="-")
app: contextvars.ContextVar[str] = contextvars.ContextVar("relay_app", default="-")

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
        record.message_id = message_id.get()
        record.app = app.get()
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


def bind(*, call: str = "-", message: str = "-", app_name: str = "-") -> None:
    """Set the context of the current task (a handler's own task: nothing to reset)."""
    install()
    call_id.set(call)
    message_id.set(message)
    app.set(app_name or "-")
